"""Peak memory and training throughput of forward + LM loss + backward: full logits vs the fused loss.

    python scripts/loss_memory.py --preset tiny --device cpu --batch 2 --seq 128
    python scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --impl chunked

Prints one JSON line per (model, loss) with the peak (live tensor bytes, plus
torch.cuda.max_memory_allocated and their ratio on CUDA), the loss path and tok/s.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks import measure
from muse.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=None, help="default: the preset's max_seq_len")
    p.add_argument("--throughput-batch", type=int, default=None, help="default: --batch")
    p.add_argument("--steps", type=int, default=3, help="timed throughput steps (0: memory only)")
    p.add_argument("--impl", default="fused", choices=list(measure.LOSS_IMPLS))
    p.add_argument("--models", default="phase2,stage1", help="comma-separated registry names")
    p.add_argument("--compile", action="store_true", help="throughput with the model and the loss compiled as one graph")
    p.add_argument("--compile-mode", choices=["reduce-overhead"], help="torch.compile mode of --compile (CUDA graphs)")
    args = p.parse_args()
    dev = torch.device(args.device)
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name, args.preset, device=dev)
        seq = args.seq or model.config.max_seq_len
        for loss in ("full", "fused"):
            mem = measure.peak_memory(model, args.batch, seq, dev, loss=loss, impl=args.impl)
            row = {"model": name, "preset": args.preset, "loss": loss, "loss_path": mem["loss_path"],
                   "batch": args.batch, "seq": seq, "measure": mem["measure"],
                   "peak_MiB": round(mem["peak_bytes"] / 2**20, 1),
                   "before_MiB": round(mem["before_bytes"] / 2**20, 1),
                   "tracked_peak_MiB": round(mem["tracked_peak_bytes"] / 2**20, 1),
                   "agreement": mem["agreement"]}
            if mem["cuda_raw_peak_bytes"] is not None:
                row["cuda_raw_peak_MiB"] = round(mem["cuda_raw_peak_bytes"] / 2**20, 1)
                row["cuda_foreign_MiB"] = round(mem["cuda_foreign_bytes"] / 2**20, 1)
            if args.steps:
                tp = measure.throughput(model, args.throughput_batch or args.batch, seq, dev, args.steps,
                                        warmup=2, loss=loss, impl=args.impl, compiled=args.compile,
                                        compile_mode=args.compile_mode)
                row["train_tok_s"] = round(tp["tokens_per_second"], 1)
                row["compiled"] = args.compile
                row["compile_mode"] = tp["compile_mode"]
            print(json.dumps(row), flush=True)
        del model


if __name__ == "__main__":
    main()
