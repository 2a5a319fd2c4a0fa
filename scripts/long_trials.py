"""The stability criterion at long context: non-finite rate and gradient norms over random-input trials.

    python scripts/long_trials.py --model stage1 --preset mix --seq 8192 --trials 100 --device cuda
    python scripts/long_trials.py --preset mix --model-arg lambda_kind=real --seq 8192

The model is built with ``max_seq_len`` = ``--seq`` (the Stage 1 position table grows with it) and
``benchmarks.measure.stability_trials`` runs: forward + the training loss + backward on random ids,
every parameter's gradient norm checked against [1e-6, 1e3]. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks import measure
from muse.cli.train import parse_key_values
from muse.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stage1")
    p.add_argument("--preset", default="mix")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    overrides = {**parse_key_values(args.model_arg), "max_seq_len": args.seq}
    torch.manual_seed(args.seed)
    model = build_model(args.model, args.preset, device=torch.device(args.device), **overrides)
    start = time.perf_counter()
    result = measure.stability_trials(model, args.trials, args.batch, args.seq, torch.device(args.device),
                                      seed=args.seed)
    print(json.dumps({"model": args.model, "preset": args.preset, "overrides": overrides, "batch": args.batch,
                      "seq": args.seq, "device": args.device, "seconds": round(time.perf_counter() - start, 1),
                      **result}))


if __name__ == "__main__":
    main()
