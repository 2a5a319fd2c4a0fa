"""Where the activation bytes of a model's backward live: per module, per tensor.

    PYTHONPATH=. python scripts/saved_bytes.py --preset mix --batch 2 --seq 256
    PYTHONPATH=. python scripts/saved_bytes.py --preset mix --batch 2 --seq 1024 --detail

Runs one training-mode forward (``return_hidden=True``, no loss) on CPU and lists every storage
that is still alive after it, other than parameters, buffers and inputs: what the backward will
read (tensors saved by autograd nodes, and the inputs a ``torch.utils.checkpoint`` region keeps
for its recompute) plus the returned hidden state.  Each storage counts once (views share it)
and is charged to the module whose forward created it (the innermost one, the block index
collapsed to ``*``).  ``saved`` marks storages that reached ``saved_tensors_hooks`` (the ones a
checkpoint region keeps are reached only through its frame, so they show as not ``saved``).
Prints a table per module (MiB over all layers, bytes per token per layer) and, with
``--detail``, one line per storage kind.
"""

from __future__ import annotations

import argparse
import re
import weakref
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from muse.models import build_model


class _Creations(TorchDispatchMode):
    """Remembers, for every storage an op returns, the module path that was running and the tensor's look."""

    def __init__(self, where: list[str]):
        super().__init__()
        self.where = where
        self.made: dict[int, tuple[weakref.ref, str, torch.dtype, tuple, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_meta:
                s = t.untyped_storage()
                key = s.data_ptr()
                old = self.made.get(key)
                if key and (old is None or old[0]() is not s):  # new, or an address freed and reused
                    self.made[key] = (weakref.ref(s), self.where[-1], t.dtype, tuple(t.shape), s.nbytes())
        return out


def _collapse(name: str) -> str:
    return re.sub(r"^blocks\.\d+", "blocks.*", name) or "(model)"


def survey(model: torch.nn.Module, ids: torch.Tensor) -> list[dict]:
    """One row per storage alive after ``model(ids, return_hidden=True)`` in train mode (see module doc)."""
    where = ["(model)"]
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue
        path = _collapse(name)
        handles.append(mod.register_forward_pre_hook(lambda m, a, p=path: where.append(p)))
        handles.append(mod.register_forward_hook(lambda m, a, o: where.pop() and None))
    known = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), ids]}
    saved: set[int] = set()

    def pack(t):
        saved.add(t.untyped_storage().data_ptr())
        return t

    model.train()
    try:
        with _Creations(where) as mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            hidden = model(ids, return_hidden=True)
    finally:
        for h in handles:
            h.remove()
    rows = []
    for key, (ref, path, dtype, shape, nbytes) in mode.made.items():
        if ref() is None or key in known:
            continue
        rows.append(dict(module=path, dtype=str(dtype).replace("torch.", ""), shape=shape, bytes=nbytes,
                         saved=key in saved, output=key == hidden.untyped_storage().data_ptr()))
    del hidden
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mix")
    p.add_argument("--model", default="stage1")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--detail", action="store_true", help="one line per (module, dtype, shape)")
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model(args.model, args.preset)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq))
    rows = survey(model, ids)
    tokens, layers = args.batch * args.seq, max(1, getattr(model.config, "n_layers", 1))
    per = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        per[r["module"]][0] += r["bytes"]
        per[r["module"]][1 if r["saved"] else 2] += r["bytes"]
    total = sum(r["bytes"] for r in rows)
    print(f"{args.model} {args.preset}: B={args.batch} S={args.seq}, {len(rows)} storages, "
          f"{total / 2**20:.1f} MiB alive after forward")
    print(f"{'module':44s} {'MiB':>8s} {'B/tok/layer':>12s} {'saved':>8s} {'other':>8s}")
    for mod, (b, s, o) in sorted(per.items(), key=lambda kv: -kv[1][0]):
        n = layers if mod.startswith("blocks.*") else 1
        print(f"{mod:44s} {b / 2**20:8.2f} {b / tokens / n:12.0f} {s / 2**20:8.2f} {o / 2**20:8.2f}")
    blocks = sum(b for m, (b, _, _) in per.items() if m.startswith("blocks.*"))
    print(f"{'blocks.* total':44s} {blocks / 2**20:8.2f} {blocks / tokens / layers:12.0f}")
    if args.detail:
        kinds = defaultdict(lambda: [0, 0])
        for r in rows:
            k = (r["module"], r["dtype"], r["shape"], "saved" if r["saved"] else ("output" if r["output"] else "kept"))
            kinds[k][0] += 1
            kinds[k][1] += r["bytes"]
        print()
        for (mod, dt, shape, how), (count, b) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
            print(f"{mod:44s} {dt:8s} {str(shape):24s} {how:6s} x{count:<3d} {b / 2**20:8.2f} MiB")


if __name__ == "__main__":
    main()
