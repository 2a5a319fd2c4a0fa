"""What is alive at the peak of one training step, compiled and eager (CUDA): the allocator's history, summed.

Records ``torch.cuda.memory`` history over one warm step (forward, fused loss, backward; the step
``scripts/compiled_step_memory.py`` measures), finds the step's peak, and prints the blocks allocated during the step
and alive there, grouped by the innermost frame in MUSE or inductor's generated code (with that source line).

    python scripts/compiled_step_snapshot.py --model stage1:mix --batch 2 --top 25
"""

from __future__ import annotations

import argparse
import collections
import functools
import linecache

import torch

from benchmarks import measure
from muse.models import build_model
from muse.train.loss import compile_model_loss, model_loss


def _where(frames: list[dict]) -> str:
    for f in frames:
        name = f["filename"]
        if "torchinductor" in name or "/muse/" in name:
            line = linecache.getline(name, f["line"]).strip()[:110]
            return f"{name.rsplit('/', 1)[-1]}:{f['line']} {f['name']} | {line}"
    return "other: " + " < ".join(f"{f['filename'].rsplit('/', 1)[-1]}:{f['line']}" for f in frames[:3])


def peak_report(model, step, inputs, targets, top: int) -> None:
    for _ in range(2):
        step(inputs, targets).backward()
        model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=500_000, stacks="python")
    step(inputs, targets).backward()
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    live: dict[int, dict] = {}
    now = peak = 0
    at_peak: dict[int, dict] = {}
    for ev in snap["device_traces"][torch.cuda.current_device()]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
            now += ev["size"]
            if now > peak:
                peak, at_peak = now, dict(live)
        elif ev["action"] == "free_completed" and ev["addr"] in live:
            now -= live.pop(ev["addr"])["size"]
    groups: dict[str, list[int]] = collections.defaultdict(list)
    for ev in at_peak.values():
        groups[_where(ev["frames"])].append(ev["size"])
    print(f"  before the step {start / 2**20:.1f} MiB; the step's peak above it {peak / 2**20:.1f} MiB in "
          f"{len(at_peak)} blocks")
    for where, sizes in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"  {sum(sizes) / 2**20:8.1f} MiB {len(sizes):4d}x  {where}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="stage1:mix")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    name, _, preset = args.model.partition(":")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(name, preset or "seed", device=dev)
    model.train()
    seq = model.config.max_seq_len
    inputs, targets = measure._random_batch(model.config.vocab_size, args.batch, seq, dev,
                                            torch.Generator().manual_seed(0))
    for label, step in (("compiled", compile_model_loss(model)), ("eager", functools.partial(model_loss, model))):
        print(f"{args.model} {label}, B {args.batch}, S {seq}")
        peak_report(model, step, inputs, targets, args.top)
        model.zero_grad(set_to_none=True)


if __name__ == "__main__":
    main()
