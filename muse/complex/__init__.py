"""Planar complex32: the ``ComplexTensor`` data type and its functional ops.

Imports run one way: ``tensor`` (the type, shape ops) <- ``ops``/``linalg``/``layers``
(functions of ComplexTensors) <- this file, which attaches the functions to the type
once as its operators and methods.  ``muse.complex`` never imports ``muse.nn``;
modules are thin wrappers over these functions.
"""

from muse.complex._policy import (
    compute_dtype,
    fp32_accumulation,
    gemm_dtype,
    gemm_linear,
    gemm_matmul,
    gemm_policy_set,
    set_gemm_policy,
)
from muse.complex.layers import (
    DROPOUT_MODES,
    dropout,
    embedding,
    layer_norm,
    layer_norm_pair,
    modrelu,
)
from muse.complex.linalg import linear, matmul
from muse.complex.ops import (
    abs,
    abs2,
    add,
    angle,
    cat,
    conj,
    div,
    eq,
    exp,
    from_complex,
    from_real,
    mean,
    mul,
    ne,
    neg,
    polar,
    randn,
    stack,
    sub,
    sum,
    to_complex,
    zeros,
)
from muse.complex.tensor import ComplexTensor, plane_dtype


def _reflected(op):
    """``other <op> self`` for the reflected operators (``__radd__`` and friends)."""

    def method(self, other):
        return op(other, self)

    method.__name__ = f"__r{op.__name__}__"
    method.__doc__ = f"other {op.__name__} self, as :func:`muse.complex.{op.__name__}` (other, self)."
    return method


for _name, _op in (("add", add), ("sub", sub), ("mul", mul), ("truediv", div), ("matmul", matmul)):
    setattr(ComplexTensor, f"__{_name}__", _op)
    setattr(ComplexTensor, f"__r{_name}__", _reflected(_op))
ComplexTensor.__neg__ = neg
ComplexTensor.__eq__ = eq
ComplexTensor.__ne__ = ne
for _op in (conj, abs, abs2, angle, exp, sum, mean, to_complex):
    setattr(ComplexTensor, _op.__name__, _op)
del _name, _op

__all__ = [
    "DROPOUT_MODES", "ComplexTensor", "abs", "abs2", "add", "angle", "cat", "compute_dtype", "conj", "div",
    "dropout", "embedding", "eq", "exp", "fp32_accumulation", "from_complex", "from_real", "gemm_dtype", "gemm_linear", "gemm_matmul", "gemm_policy_set", "layer_norm", "layer_norm_pair",
    "linear", "matmul", "mean", "modrelu", "mul", "ne", "neg", "plane_dtype", "polar", "randn", "set_gemm_policy", "stack",
    "sub", "sum", "to_complex", "zeros",
]
