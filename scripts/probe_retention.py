"""Probe: complex_retention (kernels on and off) against the float64 definition over the verification
suite's cases, recording every case outside the bound (not a test: a diagnostic for one device)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings

from muse import kernels
from muse.scan import complex_retention, complex_retention_sequential
from verification.harness import ct, planes, tensor
from verification.test_retention import _abs_sums, _eps, retention_case


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bad: list[dict] = []
    worst = {"y": 0.0, "state": 0.0}

    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=retention_case())
    def probe(case):
        q, k, v, log_decay, omega, chunk = case
        s, dk, dv = q.shape[-2], q.shape[-1], v.shape[-1]
        ref = [ct(x.astype(np.float64), "cpu") for x in (q, k, v)]
        y64, s64 = complex_retention_sequential(*ref, torch.from_numpy(log_decay.astype(np.float64)),
                                                torch.from_numpy(omega.astype(np.float64)), output_final_state=True)
        m_y, m_w = _abs_sums(q, k, v, log_decay)
        eps = _eps(s, dk, chunk, log_decay) + (8 * s + 4 * dk + 16) * 2.0**-53
        for on in ("1", "0"):
            with kernels.environment(MUSE_KERNELS=on):
                inp = [ct(x.astype(np.float32), args.device) for x in (q, k, v)]
                y, st = complex_retention(*inp, tensor(log_decay, args.device), tensor(omega, args.device),
                                          output_final_state=True, chunk_size=chunk)
            for name, got, want, m in (("y", planes(y), planes(y64), m_y),
                                       ("state", planes(st), planes(s64), np.concatenate([m_w, m_w], -1))):
                err = np.abs(got.astype(np.float64) - want)
                tol = eps * np.broadcast_to(m, err.shape)
                ratio = float((err / np.maximum(tol, 1e-300)).max()) if err.size else 0.0
                worst[name] = max(worst[name], ratio) if on == "1" else worst[name]
                if (err > tol).any():
                    i = tuple(np.argwhere(err > tol)[0])
                    bad.append({"kernels": on, "out": name, "S": s, "dk": dk, "dv": dv, "chunk": chunk,
                                "index": [int(x) for x in i], "got": float(got[i]), "want": float(want[i]),
                                "tol": float(tol[i]), "max_abs_q": float(np.abs(q).max()),
                                "max_abs_k": float(np.abs(k).max()), "max_abs_v": float(np.abs(v).max()),
                                "min_log_decay": float(log_decay.min()) if log_decay.size else 0.0,
                                "n_bad": int((err > tol).sum()), "n": int(err.size)})

    probe()
    summary = {"device": args.device, "examples": args.examples, "worst_ratio_kernels": worst, "bad": len(bad),
               "bad_by": {f"{b['kernels']}/{b['out']}": sum(1 for c in bad if (c['kernels'], c['out']) ==
                                                            (b['kernels'], b['out'])) for b in bad}}
    print(json.dumps(summary))
    for b in bad[:40]:
        print(json.dumps(b))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "bad": bad}, f)


if __name__ == "__main__":
    main()
