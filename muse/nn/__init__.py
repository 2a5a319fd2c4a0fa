"""Modules: complex ones are thin wrappers whose forward is one call into ``muse.complex``;
``PaddedLinear`` (any real LM head over an unaligned vocabulary), ``RealLinear`` (the same under the
precision policy) and ``RealFeedForward`` serve the real LM heads and the real models;
``TiedRealHead`` is a head tied to a ComplexEmbedding's real table; ``PointerMixture`` is any
model's optional copy path over its window."""

from muse.nn.activation import ModReLU
from muse.nn.dropout import ComplexDropout
from muse.nn.embedding import ComplexEmbedding, TiedRealHead
from muse.nn.feedforward import RealFeedForward
from muse.nn.linear import ComplexLinear, PaddedLinear, RealLinear
from muse.nn.mixers import ComplexRecurrence, ComplexRetention
from muse.nn.norm import ComplexLayerNorm
from muse.nn.pointer import PointerMixture

__all__ = [
    "ComplexDropout", "ComplexEmbedding", "ComplexLayerNorm", "ComplexLinear", "ComplexRecurrence", "ComplexRetention", "ModReLU",
    "PaddedLinear", "PointerMixture", "RealFeedForward", "RealLinear", "TiedRealHead",
]
