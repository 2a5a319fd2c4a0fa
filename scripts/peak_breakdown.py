"""What is alive at the peak of one forward + LM loss + backward (live tensor bytes, any device).

    python scripts/peak_breakdown.py --model stage1 --preset mix --device cuda --batch 2 --seq 1024

Prints the peak and the live tensors at it, grouped by the op that made them, shape and dtype
(largest first; "before": parameters, buffers, inputs), then one JSON line with all of it.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks import measure
from muse.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stage1")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=None, help="default: the preset's max_seq_len")
    p.add_argument("--impl", default="fused", choices=list(measure.LOSS_IMPLS))
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, args.preset, device=torch.device(args.device))
    seq = args.seq or model.config.max_seq_len
    mem = measure.peak_memory(model, args.batch, seq, torch.device(args.device), impl=args.impl, record_peak=True)
    print(f"{args.model} {args.preset} B{args.batch} S{seq} {mem['loss_path']}: peak {mem['peak_bytes'] / 2**20:.1f} MiB "
          f"({mem['measure']}); tracked {mem['tracked_peak_bytes'] / 2**20:.1f} MiB, of which alive at the peak:")
    for mib, op, shape, dtype in mem["at_peak"][: args.top]:
        print(f"  {mib:8.1f}  {op:32s} {shape} {dtype}")
    print(json.dumps({"model": args.model, "preset": args.preset, **mem}))


if __name__ == "__main__":
    main()
