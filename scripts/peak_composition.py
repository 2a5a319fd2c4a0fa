"""What is alive at the peak of one forward + LM loss + backward: storages grouped by the op that made them.

    PYTHONPATH=. python scripts/peak_composition.py --model stage1 --preset seed --batch 2 --seq 1024
    PYTHONPATH=. python scripts/peak_composition.py --model phase2 --device cuda --loss full
    PYTHONPATH=. python scripts/peak_composition.py --preset mix --model-arg lambda_kind=complex

Runs the step of ``benchmarks.measure.peak_memory`` (on CUDA after one unmeasured warm-up step)
under a :class:`benchmarks.memory.LiveTensorBytes` that also remembers, for every storage, the op,
dtype and shape that created it, and keeps a snapshot of the live set each time the peak grows.
Prints the peak, the op during which it was reached, and the snapshot grouped by (op, dtype),
largest first (parameters, buffers, inputs and gradients that existed before: ``before the step``).
On CUDA it also prints ``torch.cuda.max_memory_allocated`` minus what was allocated before the
step and is not the step's (the benchmark's measure), to compare.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.utils._pytree import tree_flatten

from benchmarks.measure import _loss, _random_batch, cuda_warm_up
from benchmarks.memory import LiveTensorBytes
from muse.cli.train import parse_key_values
from muse.models import build_model


class PeakSnapshot(LiveTensorBytes):
    """LiveTensorBytes that records the creator of each storage and the live set at the peak."""

    def __init__(self):
        super().__init__()
        self.origin: dict[int, str] = {}
        self.at_peak: list[tuple[str, int]] = []
        self.peak_op = ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta and t.layout == torch.strided:
                key = id(t.untyped_storage())
                if key not in self._live:
                    self.origin[key] = f"{func.overloadpacket.__name__} {str(t.dtype).removeprefix('torch.')}"
                self._add(t)
        if self.current >= self.peak:
            self.at_peak = [(self.origin.get(k, "before the step"), nb) for k, (_, nb) in self._live.items()]
            self.peak_op = func.overloadpacket.__name__
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stage1")
    p.add_argument("--preset", default="seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--loss", default="fused", choices=["fused", "full"])
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), as in muse train")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, args.preset, device=device, **parse_key_values(args.model_arg))
    model.train()
    inputs, targets = _random_batch(model.config.vocab_size, args.batch, args.seq, device,
                                    torch.Generator().manual_seed(0))
    cuda = device.type == "cuda"
    if cuda:
        cuda_before = cuda_warm_up(model, inputs, targets, args.loss, "auto", device)
    with PeakSnapshot() as snap:
        snap.track([*model.parameters(), *model.buffers(), inputs, targets])
        before = snap.current
        _loss(model, inputs, targets, args.loss, "auto").backward()
    mib = 2.0**-20
    print(f"{args.model} {args.preset} B{args.batch} S{args.seq} {args.loss} on {device}: "
          f"tracked peak {snap.peak * mib:.1f} MiB (before the step {before * mib:.1f}), reached in {snap.peak_op}")
    if cuda:
        torch.cuda.synchronize(device)
        foreign = max(cuda_before - before, 0)
        print(f"cuda max_memory_allocated - foreign: {(torch.cuda.max_memory_allocated(device) - foreign) * mib:.1f} MiB")
    groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for origin, nbytes in snap.at_peak:
        groups[origin][0] += nbytes
        groups[origin][1] += 1
    for origin, (nbytes, count) in sorted(groups.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{nbytes * mib:9.1f} MiB  {count:4d} storages  {origin}")


if __name__ == "__main__":
    main()
