"""Diagnostic: how much a training-free continuous cache (Grave et al. 2017) lowers a trained model's
test perplexity, for any model.  p(w | t) = (1 - lam) p_model(w) + lam p_cache(w), with p_cache(w) the
softmax over earlier positions j < t of the window of theta cos(h_t, h_j), summed over the j whose next
token is w (h: the head input).  Causal: position t reads only the tokens up to t.  theta and lam are
chosen on the first half of the scored targets and reported on the second half, beside the model alone.
Not part of any model: it measures how much of the remaining loss is copying from the context.

    python scripts/cache_probe.py RUN_DIR [RUN_DIR ...] --tokens-npy test.npy --targets 32768 --stride 128
"""
from __future__ import annotations

import argparse
import itertools
import json
import math

import numpy as np
import torch

from muse.data import eval_windows
from muse.data.batches import IGNORE_INDEX
from muse.train.checkpoint import model_from_checkpoint

THETAS = (2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
LAMS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)


@torch.no_grad()
def window_terms(model, inputs: torch.Tensor, targets: torch.Tensor):
    """(log p_model(target), per theta: p_cache(target)) at the scored positions of one window."""
    h = model(inputs, return_hidden=True).float()  # (1, L, d)
    logp = torch.log_softmax(model.lm_head(h.to(model.lm_head.weight.dtype)).float(), dim=-1)
    keep = targets[0] != IGNORE_INDEX
    tgt = targets[0].clamp_min(0)
    lp = logp[0].gather(1, tgt[:, None])[:, 0][keep]
    u = torch.nn.functional.normalize(h[0], dim=-1)
    sim = u @ u.T  # (L, L)
    n = sim.shape[0]
    earlier = torch.ones(n, n, dtype=torch.bool).tril(-1)  # j < t
    nxt = torch.cat([inputs[0, 1:], targets[0, -1:].clamp_min(0)])  # the token after j (known at t > j)
    same = nxt[None, :] == tgt[:, None]  # (t, j): j's next token is t's target
    out = []
    for theta in THETAS:
        w = torch.where(earlier, theta * sim, -math.inf)
        a = torch.softmax(w, dim=-1).nan_to_num(0.0)  # row 0 has no earlier position: p_cache = 0
        out.append((a * same).sum(-1)[keep])
    return lp, out


def mixed_ppl(lp: torch.Tensor, pc: list[torch.Tensor], sl: slice, k: int, lam: float) -> float:
    """Perplexity over ``sl`` of (1 - lam) p_model + lam p_cache at THETAS[k]."""
    mix = (1 - lam) * lp[sl].exp() + lam * pc[k][sl]
    return math.exp(-mix.log().mean().item())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--tokens-npy", required=True)
    ap.add_argument("--targets", type=int, default=32768)
    ap.add_argument("--seq-len", type=int, default=None, help="window (default: the model's max_seq_len)")
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tokens = np.load(args.tokens_npy)[: args.targets + 1]
    results = []
    for run in args.runs:
        model, _ = model_from_checkpoint(run, "cpu")
        model.eval()
        seq = args.seq_len or model.config.max_seq_len
        lps, caches = [], [[] for _ in THETAS]
        for inputs, targets, _ in eval_windows(tokens, seq, args.stride):
            lp, cs = window_terms(model, inputs, targets)
            lps.append(lp)
            for k, c in enumerate(cs):
                caches[k].append(c)
        lp = torch.cat(lps).double()
        pc = [torch.cat(c).double() for c in caches]
        half = lp.numel() // 2

        tune = slice(0, half)
        test = slice(half, None)
        best = min(itertools.product(range(len(THETAS)), LAMS), key=lambda kl: mixed_ppl(lp, pc, tune, *kl))
        row = {"run": run, "targets": int(lp.numel()), "ppl_all": math.exp(-lp.mean().item()),
               "ppl_second_half": mixed_ppl(lp, pc, test, 0, 0.0), "theta": THETAS[best[0]], "lam": best[1],
               "ppl_second_half_cache": mixed_ppl(lp, pc, test, *best),
               "ppl_first_half": mixed_ppl(lp, pc, tune, 0, 0.0), "ppl_first_half_cache": mixed_ppl(lp, pc, tune, *best)}
        row["reduction"] = 1 - row["ppl_second_half_cache"] / row["ppl_second_half"]
        print(json.dumps(row))
        results.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
