"""How close the copy path's fp32 loss comes to its derived bound, and whether the bound can fail.

    python scripts/pointer_bound_margin.py --examples 400

Draws ``verification/test_pointer.py``'s cases (CPU), computes ``PointerMixture.nll`` and prints the
max and median of |error| / bound, then how many cases fail when the float64 reference is perturbed
(θ by 1e-4 relative, the gate's bias by 1e-4): a bound that no perturbation can fail would prove nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings

import verification.test_pointer as T
from muse.nn import PointerMixture
from verification import bounds as B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=400)
    args = ap.parse_args()
    ratios, fails, by_mode = [], {"theta": 0, "gate": 0}, {"cache": [], "sentinel": []}

    @settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck), database=None,
              derandomize=True)
    @given(case=T.pointer_case())
    def run(case):
        h, wq, wk, log_theta, wg, bg, ids, targets, vocab_nll, block, mode = case
        pointer = PointerMixture(h.shape[1], wq.shape[0], mode=mode)
        with torch.no_grad():
            pointer.query.weight.copy_(torch.from_numpy(wq))
            pointer.key.weight.copy_(torch.from_numpy(wk))
            pointer.log_theta.fill_(float(log_theta))
            pointer.gate.weight.copy_(torch.from_numpy(wg[None]))
            pointer.gate.bias.fill_(float(bg))
            got = pointer.nll(torch.from_numpy(h[None]), torch.from_numpy(ids[None]), torch.from_numpy(targets[None]),
                              torch.from_numpy(vocab_nll[None]), block=block)[0].double().numpy()
        theta = float(np.exp(np.float64(log_theta)))
        exact = T._exact(h, wq, wk, theta, wg, bg, ids, targets, vocab_nll, mode)
        bound = B.pointer_nll_abs(h.astype(np.float64), wq.astype(np.float64), wk.astype(np.float64), theta,
                                  wg.astype(np.float64), float(bg), ids, targets, vocab_nll.astype(np.float64), exact)
        ratios.append(float((np.abs(got - exact["nll"]) / bound).max()))
        by_mode[mode].append(ratios[-1])
        for name, th, b in (("theta", theta * (1 + 1e-4), float(bg)), ("gate", theta, float(bg) + 1e-4)):
            wrong = T._exact(h, wq, wk, th, wg, b, ids, targets, vocab_nll, mode)["nll"]
            fails[name] += bool((np.abs(got - wrong) > bound).any())

    run()
    print(f"{len(ratios)} cases: max error/bound {max(ratios):.3f}, median {np.median(ratios):.3f}; "
          f"cases failing with theta x (1 + 1e-4): {fails['theta']}, gate bias + 1e-4: {fails['gate']}; "
          + ", ".join(f"{m}: {len(r)} cases, max {max(r):.3f}" for m, r in by_mode.items() if r))


if __name__ == "__main__":
    main()
