"""Hypothesis strategies and deterministic grids for planar complex32 data (import as ``vs``).

A complex array is drawn as ONE float16 array of shape (2, *shape) (plane 0 real,
plane 1 imaginary), so both planes always share a shape.  Magnitude bands:

- ``small``: |x| <= 255, so every real product fits fp16 (array-api-tests' cap);
  note |z|^2 = re^2 + im^2 can still reach 2 * 255^2 and overflow;
- ``full``: every finite fp16, subnormals, +-0 and +-65504 included;
- ``tiny``: |x| < 2**-14 (subnormals and zero);
- ``mixed``: each element from any of the above, so one tensor mixes magnitudes;
- ``nonfinite``: ``mixed`` plus +-inf and nan (contract tests only).

Shapes: 0-d, empty, 1-4 dims, plus fixed sizes that end in a partial vector
(7, 17, 33, 65, 129, 257 elements) for SIMD and CUDA vectorised tails.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

MAX_F16 = 65504.0
SMALL = 255.0
TINY_NORMAL = 2.0**-14
SUBNORMAL_MIN = 2.0**-24

# Edge values pinned with @example: zeros, the smallest subnormal and normal, the largest
# value whose square fits fp16 (255.875; 256 squares to 65536 = inf), and the largest finite.
EDGE_VALUES = (0.0, -0.0, SUBNORMAL_MIN, -SUBNORMAL_MIN, TINY_NORMAL, 1.0, -1.0, 255.875, 256.0,
               -255.875, 300.0, 400.0, MAX_F16, -MAX_F16)

TAIL_SHAPES = ((7,), (17,), (33,), (65,), (129,), (257,), (3, 17), (2, 3, 5, 7), (0,), (2, 0), ())


def f16_floats(band: str = "mixed") -> st.SearchStrategy[float]:
    """Scalar fp16 values of a magnitude band (see the module docstring)."""
    if band == "small":
        return st.floats(-SMALL, SMALL, width=16, allow_subnormal=True)
    if band == "full":
        return st.floats(width=16, allow_nan=False, allow_infinity=False, allow_subnormal=True)
    if band == "tiny":
        return st.floats(-TINY_NORMAL, TINY_NORMAL, width=16, allow_subnormal=True,
                         exclude_min=True, exclude_max=True)
    if band == "unit":
        return st.floats(-4.0, 4.0, width=16, allow_subnormal=True)
    if band == "mixed":
        return st.one_of(f16_floats("small"), f16_floats("full"), f16_floats("tiny"))
    if band == "nonfinite":
        return st.one_of(f16_floats("mixed"), st.sampled_from([math.inf, -math.inf, math.nan]))
    raise ValueError(f"unknown band {band!r}")


def shapes(min_dims: int = 0, max_dims: int = 4, max_side: int = 6, max_numel: int = 128,
           tails: bool = True) -> st.SearchStrategy[tuple[int, ...]]:
    """Array shapes: random ones up to ``max_numel`` elements, plus vector-tail sizes."""
    random = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=max_side)
    random = random.filter(lambda s: math.prod(s) <= max_numel)
    if not tails:
        return random
    fixed = st.sampled_from([s for s in TAIL_SHAPES if min_dims <= len(s) <= max_dims])
    return st.one_of(random, fixed)


def real_arrays(shape, band: str = "mixed") -> st.SearchStrategy[np.ndarray]:
    """A float16 array of ``shape`` (a tuple or a shape strategy)."""
    return hnp.arrays(np.float16, shape, elements=f16_floats(band))


def complex_arrays(shape=None, band: str = "mixed") -> st.SearchStrategy[np.ndarray]:
    """Planes (2, *shape) of float16; ``shape`` a tuple, a strategy, or None for :func:`shapes`."""
    if shape is None:
        shape = shapes()
    if isinstance(shape, tuple):
        return hnp.arrays(np.float16, (2, *shape), elements=f16_floats(band))
    return shape.flatmap(lambda s: hnp.arrays(np.float16, (2, *s), elements=f16_floats(band)))


@st.composite
def complex_pairs(draw, band: str = "mixed", broadcast: bool = True, max_numel: int = 128):
    """Two complex planes arrays whose logical shapes broadcast together (or are equal)."""
    if broadcast and draw(st.booleans()):
        bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=5))
        sa, sb = bs.input_shapes
    else:
        sa = sb = draw(shapes(max_numel=max_numel))
    return draw(complex_arrays(sa, band)), draw(complex_arrays(sb, band))


def grid_values(n: int = 32) -> np.ndarray:
    """scipy-style grid: n/2 points linspace(0, 10) and n/2 points 2**linspace(-24, log2 65504), both signs."""
    half = max(n // 2, 1)
    lin = np.linspace(0.0, 10.0, half)
    log = np.exp2(np.linspace(-24.0, np.log2(MAX_F16), half))
    pos = np.unique(np.concatenate([lin, log]).astype(np.float16))
    return np.concatenate([-pos[::-1], pos])


def complex_grid(n: int = 32) -> np.ndarray:
    """All re x im pairs of :func:`grid_values` as planes (2, N)."""
    v = grid_values(n)
    re, im = np.meshgrid(v, v, indexing="ij")
    return np.stack((re.ravel(), im.ravel())).astype(np.float16)


def grid_pairs(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs for binary ops: the complex grid against a fixed permutation of itself."""
    a = complex_grid(n)
    rng = np.random.default_rng(seed)
    return a, a[:, rng.permutation(a.shape[1])]


def edge_planes() -> np.ndarray:
    """Every pair of :data:`EDGE_VALUES` as planes (2, N), for ``@example``."""
    v = np.array(EDGE_VALUES, dtype=np.float16)
    re, im = np.meshgrid(v, v, indexing="ij")
    return np.stack((re.ravel(), im.ravel()))


def edge_pair() -> tuple[np.ndarray, np.ndarray]:
    """Edge operands for binary ops: the edge grid against its reversal."""
    a = edge_planes()
    return a, a[:, ::-1].copy()


__all__ = [
    "EDGE_VALUES", "MAX_F16", "TAIL_SHAPES", "complex_arrays", "complex_grid", "complex_pairs",
    "edge_pair", "edge_planes", "f16_floats", "grid_pairs", "grid_values", "real_arrays", "shapes",
]
