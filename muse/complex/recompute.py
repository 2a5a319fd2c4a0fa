"""Recompute instead of store: what autograd keeps for backward, made smaller with the same bits.

Two tools, both eager-only (under ``torch.compile`` the partitioner decides what to save and
recompute, so they step aside; :func:`recomputed` stays with ``MUSE_RECOMPUTE_IN_COMPILE=1``), both
inactive without gradients and under :func:`disabled`:

* :func:`recomputed` (``fn(*args)`` under non-reentrant ``torch.utils.checkpoint``): the region
  keeps only its inputs and reruns ``fn`` in backward.  For element-wise fp32 math on fp16
  planes, and for the complex scan, whose fp32 states cost more than its fp16 input.
* :func:`remember` + :func:`rebuilt` (on :func:`saving`): ``remember(out, fn, *args)`` says that
  ``out`` equals ``fn(*args)`` bit for bit (a LayerNorm's or modReLU's output from its fp16
  input); ``rebuilt(op, (prep, args), ...)`` runs ``op`` on cheap operand copies ``prep(*args)``
  (casts, concatenations) while autograd keeps, for any saved view of such a copy, a recipe
  instead of the copy, and rebuilds the view from it in backward.  A GEMM's fp32 (CPU) or fp16
  (CUDA) operand copies then cost nothing: the recipe holds the fp16 planes they came from, or,
  where those were remembered, the tensors those came from.  Autograd's own
  backward formulas run on the rebuilt tensors, so the gradients are those of the plain graph
  (double backward included: autograd keeps a saved tensor's graph links apart from its data).

A recipe checks in backward that no tensor it reads was modified in place since the forward
(RuntimeError, as autograd raises for a saved tensor).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import torch
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)
from torch.utils.weak import WeakIdKeyDictionary

_state = {"enabled": True}
_remembered: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> zero-arg recipe


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Plain autograd inside the block (every intermediate stored): the reference the tests compare with."""
    old = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = old


def active(*tensors) -> bool:
    """True when a recipe could pay off: eager, gradients on, enabled, some tensor requiring grad."""
    return (_state["enabled"] and not torch.compiler.is_compiling() and torch.is_grad_enabled()
            and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors))


#: ``1``: :func:`recomputed` regions stay recomputed under ``torch.compile`` too (a checkpointed region, which
#: the partitioner reruns in backward); ``0`` (the default until measured on CUDA): the partitioner alone decides,
#: and keeps more (``mix-tiny``, CPU inductor, B 8, S 128: 110.9 MiB against eager's 71.7 and 61.1 with ``1``).
IN_COMPILE_ENV = "MUSE_RECOMPUTE_IN_COMPILE"


def _switch(env: str) -> bool:
    """The 0/1 environment switch ``env`` (default 0); ValueError for another value."""
    value = os.environ.get(env, "0")
    if value not in ("0", "1"):
        raise ValueError(f"{env} must be 0 or 1, got {value!r}")
    return value == "1"


def in_compile() -> bool:
    """Whether :func:`recomputed` regions are kept under ``torch.compile`` (``MUSE_RECOMPUTE_IN_COMPILE``, read
    when the graph is traced); ValueError for a value other than 0 or 1."""
    return _switch(IN_COMPILE_ENV)


def recomputed(fn, *args):
    """``fn(*args)`` keeping only its inputs for backward, where ``fn`` is rerun (the same code, so the
    same values) instead of its intermediates stored; plain ``fn(*args)`` when :func:`active` is false,
    except under ``torch.compile`` with :func:`in_compile` on."""
    if active(*args) or (torch.compiler.is_compiling() and in_compile() and _state["enabled"]
                         and torch.is_grad_enabled()
                         and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args)):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


#: ``1``: :func:`gemm_saved` regions (each branch of a mix block: norm -> mixer, norm -> linear -> modReLU -> linear) are, under
#: ``torch.compile``, selectively checkpointed: the partitioner keeps their GEMM outputs and recomputes the rest
#: (norms, activations, casts; custom kernel ops included, which it never recomputes on its own).  ``0`` (the
#: default; not yet measured on CUDA): the partitioner alone decides.
CHAIN_IN_COMPILE_ENV = "MUSE_RECOMPUTE_CHAIN_IN_COMPILE"
#: The ops whose outputs a :func:`gemm_saved` region keeps (by name, so this layer imports no kernel module).
GEMM_OPS = frozenset({"aten.mm.default", "aten.addmm.default", "aten.bmm.default", "aten.baddbmm.default",
                      "muse.complex_mm.default"})


def chain_in_compile() -> bool:
    """Whether :func:`gemm_saved` regions are checkpointed under ``torch.compile``
    (``MUSE_RECOMPUTE_CHAIN_IN_COMPILE``, read when the graph is traced); ValueError for a value other than 0 or 1."""
    return _switch(CHAIN_IN_COMPILE_ENV)


def compile_switches() -> list[str]:
    """The recompute switches on for code traced now: ``"regions"`` (:func:`in_compile`), ``"branches"``
    (:func:`chain_in_compile`); what a compiled run's report records."""
    return [name for name, on in (("regions", in_compile()), ("branches", chain_in_compile())) if on]


def _keep_gemms(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if str(op) in GEMM_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def gemm_saved(fn, *args):
    """``fn(*args)``; under ``torch.compile`` with :func:`chain_in_compile` on (and gradients needed), a selectively
    checkpointed region whose GEMM outputs are saved and whose other intermediates are recomputed in backward.
    Eager code is unchanged: its own recipes (:func:`rebuilt`, :func:`remember`) already keep little."""
    if (torch.compiler.is_compiling() and _state["enabled"] and torch.is_grad_enabled() and chain_in_compile()
            and any(isinstance(t, torch.Tensor) and t.requires_grad for t in args)):
        return checkpoint(fn, *args, use_reentrant=False,
                          context_fn=functools.partial(create_selective_checkpoint_contexts, _keep_gemms))
    return fn(*args)


def _recipe(fn: Callable, args: tuple) -> Callable[[], torch.Tensor]:
    """A zero-arg function returning ``fn(*args)`` without gradients, after checking that no tensor in
    ``args`` changed in place since now."""
    versions = [(a, a._version) for a in args if isinstance(a, torch.Tensor)]

    def make() -> torch.Tensor:
        for a, v in versions:
            if a._version != v:
                raise RuntimeError("a tensor needed to recompute a saved activation was modified in place "
                                   "between forward and backward")
        with torch.no_grad():
            return fn(*args)

    return make


def remember(out: torch.Tensor, fn: Callable, *args) -> torch.Tensor:
    """Record that ``out`` is ``fn(*args)`` bit for bit (and returns ``out``), so a recipe that needs
    ``out`` keeps ``args`` instead; a no-op when :func:`active` is false for ``args``."""
    if active(*args):
        _remembered[out] = _recipe(fn, args)
    return out


def source(t: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A zero-arg function returning ``t``'s values: its remembered recipe, or ``t`` itself."""
    made = _remembered.get(t)
    return made if made is not None else _recipe(lambda x: x, (t,))


def derived(fn: Callable, *args) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
    """``(fn(*args), recipe)``: the recipe recomputes the same tensor from ``args``' sources (remembered
    tensors through their own recipes), for :func:`saving`."""
    makers = [source(a) if isinstance(a, torch.Tensor) else (lambda a=a: a) for a in args]
    return fn(*args), _recipe(lambda *m: fn(*(f() for f in m)), tuple(makers))


def rebuilt(op: Callable, *operands: tuple[Callable, tuple]):
    """``op(*(fn(*args) for fn, args in operands))``, where autograd keeps, for each operand saved by
    ``op``, its recipe (``fn`` over the sources of ``args``) instead of the operand: for cheap operand
    copies (casts, concatenations) of tensors kept anyway.  Plain when :func:`active` is false."""
    if not active(*(a for _, args in operands for a in args)):
        return op(*(fn(*args) for fn, args in operands))
    made = [derived(fn, *args) for fn, args in operands]
    with saving(dict(made)):
        return op(*(t for t, _ in made))


class _Rebuild:
    """A saved view of a recomputable tensor: its recipe and the view's geometry."""

    __slots__ = ("make", "size", "stride", "offset")

    def __init__(self, make, t: torch.Tensor):
        self.make, self.size, self.stride, self.offset = make, t.size(), t.stride(), t.storage_offset()

    def __call__(self) -> torch.Tensor:
        return self.make().as_strided(self.size, self.stride, self.offset)


@contextlib.contextmanager
def saving(recipes: dict) -> Iterator[None]:
    """Inside the block, autograd keeps ``recipes[t]`` (a zero-arg function giving ``t``'s values) for any
    saved view of a key tensor ``t``, and every other saved tensor as it is.  Empty: no hooks."""
    if not recipes:
        yield
        return
    by_storage = {t.untyped_storage().data_ptr(): make for t, make in recipes.items() if t.numel()}

    def pack(t: torch.Tensor):
        make = by_storage.get(t.untyped_storage().data_ptr()) if t.layout == torch.strided else None
        return t if make is None else _Rebuild(make, t)

    def unpack(p):
        return p() if isinstance(p, _Rebuild) else p

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
