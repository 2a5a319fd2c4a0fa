"""Units in the last place for binary16 and binary32 results.

    ulp(x) = 2**(max(floor(log2|x|), emin) - (p - 1))

with p the precision (11 for fp16, 24 for fp32) and emin the smallest normal exponent
(-14, -126), so ulp(0) and the ulp of every subnormal is the subnormal spacing
(2**-24 for fp16).  The exponent is not capped above: values beyond the largest
finite number keep doubling their ulp, which is what IEEE rounding "with unbounded
exponent" uses to decide overflow.

Errors are measured against an exact value given as a float64 pair ``hi + lo``
(double-double, see :mod:`verification.reference`), so ``|got - x|`` is known to
about 2**-100 relative and the measured ULP count is not itself rounded away.
Signed zero: +0 and -0 are equal for accuracy (sign-of-zero rules are checked
bitwise by the algebra tests).  Infinity: a result of +-inf counts as the first
value past the largest finite one (2**16 for fp16), so overflowing near the
threshold costs a measured fraction of an ULP and overflowing far from it is an
error of many ULPs; inf where the exact value itself rounds to inf is no error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: precision ``p`` (bits, implicit one included), ``emin``, ``emax``."""

    name: str
    p: int
    emin: int
    emax: int
    dtype: type

    @property
    def max_finite(self) -> float:
        """(2 - 2**(1-p)) * 2**emax: 65504 for fp16."""
        return float(np.ldexp(2.0 - 2.0 ** (1 - self.p), self.emax))

    @property
    def overflow_threshold(self) -> float:
        """(2 - 2**-p) * 2**emax: exact values at or beyond it round to inf (65520 for fp16)."""
        return float(np.ldexp(2.0 - 2.0 ** (-self.p), self.emax))

    @property
    def past_max(self) -> float:
        """2**(emax+1): the value an overflowed result stands for when measuring its error."""
        return float(np.ldexp(1.0, self.emax + 1))

    @property
    def tiny(self) -> float:
        """The smallest positive subnormal, 2**(emin - p + 1)."""
        return float(np.ldexp(1.0, self.emin - self.p + 1))

    @property
    def u(self) -> float:
        """Unit roundoff 2**-p (2**-11 for fp16, 2**-24 for fp32)."""
        return float(np.ldexp(1.0, -self.p))


F16 = Format("float16", 11, -14, 15, np.float16)
F32 = Format("float32", 24, -126, 127, np.float32)
F64 = Format("float64", 53, -1022, 1023, np.float64)
FORMATS = {np.dtype(np.float16): F16, np.dtype(np.float32): F32, np.dtype(np.float64): F64}


def fmt_of(dtype) -> Format:
    """The :class:`Format` of a numpy/torch dtype name or object; ValueError for anything else."""
    if isinstance(dtype, Format):
        return dtype
    key = str(dtype).replace("torch.", "") if type(dtype).__module__.startswith("torch") else dtype
    try:
        return FORMATS[np.dtype(key)]
    except (TypeError, KeyError):
        raise ValueError(f"no ULP format for dtype {dtype!r}; use float16, float32 or float64") from None


def _floor_log2(x: np.ndarray) -> np.ndarray:
    """floor(log2|x|) exactly for finite nonzero float64 (frexp is exact)."""
    _, e = np.frexp(x)
    return e.astype(np.int64) - 1


def ulp(x, dtype=np.float16) -> np.ndarray:
    """ulp(x) = 2**(max(floor(log2|x|), emin) - p + 1) elementwise; nan for nan and inf."""
    f = fmt_of(dtype)
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    safe = np.where(finite & (x != 0), x, 1.0)
    e = np.where(x == 0, f.emin, _floor_log2(safe))
    out = np.ldexp(1.0, np.maximum(e, f.emin) - (f.p - 1))
    return np.where(finite, out, np.nan)


def ulp_of_exact(hi, lo, dtype=np.float16) -> np.ndarray:
    """ulp of the exact value hi + lo (hi = round-to-nearest float64 of it, lo the remainder).

    Differs from ulp(hi) only when hi is a power of two and lo points below it.
    """
    f = fmt_of(dtype)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), hi.shape)
    out = ulp(hi, f)
    finite = np.isfinite(hi) & (hi != 0)
    mant, _ = np.frexp(np.where(finite, hi, 1.0))
    below = finite & (np.abs(mant) == 0.5) & (lo != 0) & (np.sign(lo) != np.sign(hi))
    normal_below = below & (_floor_log2(np.where(finite, hi, 1.0)) > f.emin)
    return np.where(normal_below, out / 2, out)


def ulp_error(got, hi, lo=0.0, dtype=np.float16) -> np.ndarray:
    """|got - x| / ulp(x) for the exact x = hi + lo; see the module docstring for 0, inf and nan.

    nan got where x is a number (or the reverse) is an infinite error; nan vs nan is 0.
    """
    f = fmt_of(dtype)
    got = np.asarray(got, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    got, hi = np.broadcast_arrays(got, hi)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), hi.shape)
    err = np.zeros(hi.shape, dtype=np.float64)

    got_nan, want_nan = np.isnan(got), np.isnan(hi)
    err[got_nan != want_nan] = np.inf

    numbers = ~got_nan & ~want_nan
    want_inf = numbers & np.isinf(hi)
    err[want_inf & (got != hi)] = np.inf

    exact_finite = numbers & ~np.isinf(hi)
    exact_mag = np.abs(hi)
    overflows = exact_finite & (exact_mag >= f.overflow_threshold)
    got_inf = exact_finite & np.isinf(got)
    same_sign = np.sign(got) == np.sign(hi)
    # inf where the exact value rounds to inf with the same sign: no error.
    covered = got_inf & overflows & same_sign
    # Otherwise an inf stands for +-2**(emax+1), the first value past the format.
    g = np.where(got_inf & ~covered, np.sign(got) * f.past_max, got)
    measure = exact_finite & ~covered
    with np.errstate(invalid="ignore"):
        diff = np.abs((g - hi) - lo)
    u = ulp_of_exact(np.where(measure, hi, 1.0), np.where(measure, lo, 0.0), f)
    err[measure] = diff[measure] / u[measure]
    return err


def _ordinal(x: np.ndarray, f: Format) -> np.ndarray:
    """Integers that count representable values: consecutive values differ by 1, +0 == -0 == 0."""
    if f.dtype is np.float16:
        bits = x.astype(np.float16).view(np.uint16).astype(np.int64)
        sign, mag = bits >> 15, bits & 0x7FFF
    elif f.dtype is np.float32:
        bits = x.astype(np.float32).view(np.uint32).astype(np.int64)
        sign, mag = bits >> 31, bits & 0x7FFFFFFF
    else:
        raise ValueError("ulp_distance supports float16 and float32")
    return np.where(sign == 1, -mag, mag)


def ulp_distance(a, b, dtype=np.float16) -> np.ndarray:
    """Number of representable steps between two values of the format (0 for +0 vs -0; inf if nan)."""
    f = fmt_of(dtype)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    for name, v in (("a", a), ("b", b)):
        finite = v[np.isfinite(v)]
        if finite.size and np.any(finite.astype(f.dtype).astype(np.float64) != finite):
            raise ValueError(f"{name} holds values that are not {f.name} numbers")
    d = np.abs(_ordinal(a, f) - _ordinal(b, f)).astype(np.float64)
    return np.where(np.isnan(a) | np.isnan(b), np.inf, d)


__all__ = ["F16", "F32", "F64", "Format", "fmt_of", "ulp", "ulp_distance", "ulp_error", "ulp_of_exact"]
