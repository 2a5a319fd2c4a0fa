"""What the min-cut partitioner saves for backward in one compiled training step, summed by the op that made it.

Wraps inductor's call of ``min_cut_rematerialization_partition`` and reads the forward graph's saved outputs from their
fake values (views are followed to the op that made their storage). ``TRITON_INTERPRET=1`` puts the Triton kernels'
custom ops in the graph as on CUDA; ``MUSE_KERNELS_IN_COMPILE`` chooses which.

    TRITON_INTERPRET=1 PYTHONPATH=. python scripts/saved_for_backward.py --memory-budget 0.1
"""

from __future__ import annotations

import argparse
import collections
import operator
import os

import torch
import torch._inductor.compile_fx as compile_fx

import muse.complex as C
from benchmarks import measure
from muse.models import build_model
from muse.models.compile import set_memory_budget
from muse.train.loss import model_loss

aten = torch.ops.aten
VIEWS = (aten.view.default, aten.t.default, aten.permute.default, aten.select.int, aten.slice.Tensor,
         aten.unsqueeze.default, aten.squeeze.dim, aten.expand.default, aten.transpose.int, aten.alias.default,
         operator.getitem)


def saved_by_op(forward: torch.fx.GraphModule) -> collections.Counter:
    """Bytes of the forward graph's outputs after the first (what backward reads), by the op that made each."""
    output = next(n for n in forward.graph.nodes if n.op == "output")
    by: collections.Counter = collections.Counter()
    for value in output.args[0][1:]:
        if not (isinstance(value, torch.fx.Node) and isinstance(value.meta.get("val"), torch.Tensor)):
            continue
        t, src = value.meta["val"], value
        while src.op == "call_function" and src.target in VIEWS:
            src = src.args[0]
        by[str(src.target) if src.op == "call_function" else src.op] += t.numel() * t.element_size()
    return by


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory-budget", type=float, default=1.0)
    p.add_argument("--preset", default="mix-tiny")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--top", type=int, default=8)
    args = p.parse_args(argv)
    set_memory_budget(args.memory_budget)
    found = []
    partition = compile_fx.min_cut_rematerialization_partition

    def recording(joint, inputs, **kw):
        forward, backward = partition(joint, inputs, **kw)
        found.append(saved_by_op(forward))
        return forward, backward

    compile_fx.min_cut_rematerialization_partition = recording
    torch.manual_seed(0)
    model = build_model("stage1", args.preset, n_layers=args.layers, dropout=0.0)
    model.train()
    inputs, targets = measure._random_batch(model.config.vocab_size, args.batch, args.seq, torch.device("cpu"),
                                            torch.Generator().manual_seed(0))
    C.set_gemm_policy()
    step = torch.compile(lambda i, t: model_loss(model, i, t), fullgraph=True)
    step(inputs, targets).backward()
    by = found[-1]
    print(f"{args.preset}, {args.layers} layer(s), B {args.batch}, S {args.seq}, budget {args.memory_budget}, "
          f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}, "
          f"MUSE_KERNELS_IN_COMPILE={os.environ.get('MUSE_KERNELS_IN_COMPILE', '(default)')}: saved "
          f"{sum(by.values()) / 2**10:.1f} KiB, {(sum(by.values()) - by['placeholder']) / 2**10:.1f} KiB not inputs")
    for op, size in by.most_common(args.top):
        print(f"  {size / 2**10:9.1f} KiB  {op}")


if __name__ == "__main__":
    main()
