"""Compiled training (model + loss as one graph, CUDA graphs) with the loss's chunk loops as custom ops
vs traced as ordinary ops, and with two chunk budgets: train tok/s and the step's CUDA peak.

    python scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024

Each variant is traced afresh (``torch._dynamo.reset()``); MUSE_LOSS_OPAQUE=0 traces the loops.
Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import muse.train.loss as L
from benchmarks import measure
from muse.models import build_model

VARIANTS = (("custom-op", "1", 16), ("traced", "0", 16), ("custom-op", "1", 8), ("traced", "0", 8))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stage1")
    p.add_argument("--preset", default="seed")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", default="0,1,2,3", help="indices into " + str(VARIANTS))
    args = p.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(args.model, args.preset, device=dev)
    for i in map(int, args.variants.split(",")):
        loops, opaque, fraction = VARIANTS[i]
        os.environ["MUSE_LOSS_OPAQUE"] = opaque
        L.CHUNK_BUDGET_FRACTION = fraction
        torch._dynamo.reset()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        tp = measure.throughput(model, args.batch, args.seq, dev, args.steps, warmup=2, loss="fused", impl="fused",
                                compiled=True, compile_mode="reduce-overhead")
        peak = torch.cuda.max_memory_allocated() - before
        print(json.dumps({"model": args.model, "preset": args.preset, "batch": args.batch, "seq": args.seq,
                          "loops": loops, "chunk_budget_fraction": fraction,
                          "train_tok_s": round(tp["tokens_per_second"], 1),
                          "peak_above_start_MiB (warm-up, compile and graph pools included)": round(peak / 2**20, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
