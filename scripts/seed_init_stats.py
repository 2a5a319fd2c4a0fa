"""Init statistics of the Stage 1 seed preset over several seeds, as a markdown table.

    python scripts/seed_init_stats.py --seeds 0-5 [--eval-tokens 4096] [--model-arg KEY=VALUE ...]

Per seed (see ``muse.smoke.init_statistics``): the simple test's loss and smallest/largest
gradient norm (complex parameters split into real and imaginary parts), the loss against
uniform targets, and the eval loss over the first ``--eval-tokens`` WikiText-2 test tokens
(blocks of 4 x 1024; 0 = skip).  Used for docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from muse.smoke import init_statistics


def _seeds(text: str) -> list[int]:
    lo, sep, hi = text.partition("-")
    return list(range(int(lo), int(hi) + 1)) if sep else [int(s) for s in text.split(",")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0-5", help="a range 0-5 or a list 0,3,7")
    p.add_argument("--preset", default="seed")
    p.add_argument("--eval-tokens", type=int, default=4096, help="WikiText-2 test tokens to evaluate (0 = none)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.model_arg:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    tokens = None
    if args.eval_tokens:
        from muse.data import load_tokens

        tokens = load_tokens("test", allow_hub=False).tokens[: args.eval_tokens + 1]
    rows = []
    print("| seed | loss (2 x 128, train) | grad norm min (tensor) | grad norm max | uniform-target loss | eval loss |")
    print("|---:|---:|---|---:|---:|---:|")
    for seed in _seeds(args.seeds):
        t0 = time.perf_counter()
        r = init_statistics(seed, preset=args.preset, eval_tokens=tokens, **overrides)
        rows.append(r)
        ev = f"{r['eval_loss']:.4f}" if "eval_loss" in r else "-"
        print(f"| {seed} | {r['loss']:.4f} | {r['grad_norm_min']:.3e} ({r['grad_norm_min_tensor']}) | "
              f"{r['grad_norm_max']:.3e} | {r['uniform_target_loss']:.4f} | {ev} |  <!-- {time.perf_counter() - t0:.0f} s -->",
              flush=True)
    for key in ("loss", "grad_norm_min", "uniform_target_loss", "eval_loss"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            print(f"{key}: min {min(vals):.5g}, max {max(vals):.5g}, mean {statistics.fmean(vals):.5g}")


if __name__ == "__main__":
    main()
