"""Planar complex32: the ``ComplexTensor`` data type and its functional ops.

``muse.complex`` never imports ``muse.nn``; modules are thin wrappers over these functions.
"""

from muse.complex.layers import DROPOUT_MODES, dropout, embedding, layer_norm, modrelu
from muse.complex.linalg import linear, matmul
from muse.complex.ops import (
    abs,
    abs2,
    add,
    angle,
    cat,
    conj,
    div,
    exp,
    from_complex,
    from_real,
    mean,
    mul,
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

__all__ = [
    "DROPOUT_MODES", "ComplexTensor", "abs", "abs2", "add", "angle", "cat", "conj", "div", "dropout", "embedding",
    "exp", "from_complex", "from_real", "layer_norm", "linear", "matmul", "mean", "modrelu", "mul",
    "neg", "plane_dtype", "polar", "randn", "stack", "sub", "sum", "to_complex", "zeros",
]
