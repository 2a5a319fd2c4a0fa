"""Shape arguments and logical dims of a ``ComplexTensor`` (whose planes add a leading axis of 2)."""

from __future__ import annotations

import numbers

import torch

from muse._checks import check_int


def shape_args(args: tuple) -> tuple[int, ...]:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f(torch.Size(...))``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        args = tuple(args[0])
    for a in args:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"shape entries must be ints, got {type(a).__name__}")
    return tuple(int(a) for a in args)


def logical_dim(ndim: int, dim: int, extra: int = 0) -> int:
    """Logical dim of an ``ndim``-d ComplexTensor -> non-negative logical dim (``extra`` = 1 for unsqueeze)."""
    check_int("dim", dim)
    n = ndim + extra
    if not -n <= dim < n or n == 0:
        raise IndexError(f"dim {dim} is out of range for a {ndim}-d ComplexTensor")
    return dim % n


def plane_dim(ndim: int, dim: int, extra: int = 0) -> int:
    """The axis of the planes tensor that holds logical ``dim`` (one past it: axis 0 holds the planes)."""
    return logical_dim(ndim, dim, extra) + 1
