"""Exact references: mpmath at 50 digits from the exact fp16 inputs, rounded ONCE.

Every fp16 (and fp32, fp64) number converts to an mpf exactly.  Each reference value
is computed at ``DPS`` = 50 decimal digits (169 bits) and then rounded straight from
the mpf to the target format by :func:`round_to_format` (round to nearest, ties to
even, with subnormals and overflow), never through float64 first, so there is no
double rounding.  169 bits make the rational results exact (add, sub, mul, abs2 and
dot products of fp16 numbers need at most 2 * 40 + log2(K) bits) and leave the others
(div, sqrt, exp, sin, cos, atan2) far from any fp16 rounding boundary: a quotient or
square root of fp16 data that is not itself a fp16 midpoint lies at least ~2**-100
(relative) away from one.

Dot products and sums are accumulated exactly in Python integers (an fp16 is an
integer multiple of 2**-24, a product one of 2**-48) and converted to mpf exactly.

An :class:`Exact` holds, per element, the correctly rounded fp16 value and the exact
value as a float64 pair ``hi + lo`` (``hi`` = nearest float64, ``lo`` = nearest
float64 to the remainder), which is what :func:`verification.ulp.ulp_error` measures
against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mpmath
import numpy as np

from verification.ulp import F16, F64, Format, fmt_of

DPS = 50
ZETA_DPS = 30
mp = mpmath.mp


# ------------------------------------------------------------------ rounding
def _as_mpf(x):
    """x as an mpf without rounding (mp.mpf(x) would round an mpf or a long int to the working precision)."""
    if isinstance(x, mpmath.mpf):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        with mpmath.workprec(max(53, x.bit_length() + 1)):
            return mp.mpf(x)
    if isinstance(x, (float, np.floating)):
        return mp.mpf(float(x))  # a binary float converts exactly at any precision
    raise TypeError(f"expected an mpf, int or float, got {type(x).__name__}")


def round_to_format(x, fmt: Format | str = F16) -> float:
    """Round an mpf (or int/float) to the nearest ``fmt`` number, ties to even; returns a Python float.

    Works on the exact (sign, man, exp) of the mpf: n = man * 2**(exp - q) with the
    quantum q = max(floor(log2|x|), emin) - p + 1 is rounded to an integer, and
    |n| * 2**q >= 2**(emax + 1) overflows to inf (i.e. |x| >= (2 - 2**-p) * 2**emax).
    mpf has no signed zero: zero maps to +0.0.
    """
    f = fmt_of(fmt)
    x = _as_mpf(x)
    if mp.isnan(x):
        return math.nan
    if mp.isinf(x):
        return math.inf if x > 0 else -math.inf
    sign, man, exp, bc = x._mpf_
    if man == 0:
        return 0.0
    e = exp + bc - 1  # floor(log2|x|): man lies in [2**(bc-1), 2**bc)
    q = max(e, f.emin) - (f.p - 1)
    shift = q - exp
    if shift <= 0:
        n = man << -shift
    else:
        n = man >> shift
        rem = man - (n << shift)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and n & 1):
            n += 1
    if n.bit_length() + q > f.emax + 1:
        value = math.inf
    else:
        value = math.ldexp(n, q)
    return -value if sign else value


def split(x) -> tuple[float, float]:
    """x = hi + lo + O(2**-106 |x|): hi the nearest float64, lo the nearest float64 to x - hi."""
    x = _as_mpf(x)
    hi = round_to_format(x, F64)
    if not math.isfinite(hi):
        return hi, 0.0
    with mpmath.workdps(DPS):
        rest = mp.fsub(x, hi, exact=True)
    return hi, round_to_format(rest, F64)


@dataclass
class Exact:
    """Per element: the exact value as float64 ``hi + lo`` and its correct rounding ``f16``."""

    hi: np.ndarray
    lo: np.ndarray
    f16: np.ndarray

    @classmethod
    def from_mpf(cls, values: Sequence, shape: tuple[int, ...]) -> Exact:
        n = len(values)
        hi, lo, f16 = np.empty(n), np.empty(n), np.empty(n, dtype=np.float16)
        for i, v in enumerate(values):
            hi[i], lo[i] = split(v)
            f16[i] = round_to_format(v, F16)
        return cls(hi.reshape(shape), lo.reshape(shape), f16.reshape(shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.hi.shape


# ------------------------------------------------------------ input handling
_MPF_OF_F16: dict[int, object] = {}


def mpf16(v) -> object:
    """The exact mpf of one fp16 number (cached by bit pattern; -0 becomes 0)."""
    h = np.float16(v)
    key = int(h.view(np.uint16))
    m = _MPF_OF_F16.get(key)
    if m is None:
        m = _MPF_OF_F16[key] = mp.mpf(float(h))
    return m


def _f16(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.float16:
        raise TypeError(f"reference inputs must be float16 arrays, got {a.dtype}")
    return a


def _planes(z) -> tuple[np.ndarray, np.ndarray]:
    z = _f16(z)
    if z.ndim < 1 or z.shape[0] != 2:
        raise ValueError(f"complex inputs are planes of shape (2, *shape), got {z.shape}")
    return z[0], z[1]


def _elementwise(fn: Callable, n_out: int, *arrays: np.ndarray) -> list[Exact]:
    """Apply ``fn`` (mpf args -> tuple of mpf) to broadcast fp16 arrays at DPS digits."""
    arrays = np.broadcast_arrays(*[_f16(a) for a in arrays])
    shape = arrays[0].shape
    flat = [a.ravel() for a in arrays]
    outs: list[list] = [[] for _ in range(n_out)]
    with mpmath.workdps(DPS):
        for i in range(arrays[0].size):
            res = fn(*(mpf16(a[i]) for a in flat))
            for k in range(n_out):
                outs[k].append(res[k])
    return [Exact.from_mpf(o, shape) for o in outs]


def _is_negative_zero(v) -> bool:
    return v == 0 and math.copysign(1.0, float(v)) < 0


# ------------------------------------------------------------- elementwise
def add(a, b) -> tuple[Exact, Exact]:
    """(ar + br) + i (ai + bi)."""
    ar, ai = _planes(a)
    br, bi = _planes(b)
    re, = _elementwise(lambda x, y: (x + y,), 1, ar, br)
    im, = _elementwise(lambda x, y: (x + y,), 1, ai, bi)
    return re, im


def sub(a, b) -> tuple[Exact, Exact]:
    """(ar - br) + i (ai - bi)."""
    ar, ai = _planes(a)
    br, bi = _planes(b)
    re, = _elementwise(lambda x, y: (x - y,), 1, ar, br)
    im, = _elementwise(lambda x, y: (x - y,), 1, ai, bi)
    return re, im


def mul(a, b) -> tuple[Exact, Exact]:
    """(ar br - ai bi) + i (ar bi + ai br)."""
    ar, ai = _planes(a)
    br, bi = _planes(b)
    re, im = _elementwise(lambda w, x, y, z: (w * y - x * z, w * z + x * y), 2, ar, ai, br, bi)
    return re, im


def div(a, b) -> tuple[Exact, Exact]:
    """(ar br + ai bi)/|b|^2 + i (ai br - ar bi)/|b|^2; nan where b = 0."""
    ar, ai = _planes(a)
    br, bi = _planes(b)

    def f(w, x, y, z):
        den = y * y + z * z
        if den == 0:
            return mp.nan, mp.nan
        return (w * y + x * z) / den, (x * y - w * z) / den

    re, im = _elementwise(f, 2, ar, ai, br, bi)
    return re, im


def abs_(z) -> Exact:
    """|z| = sqrt(re^2 + im^2)."""
    re, im = _planes(z)
    out, = _elementwise(lambda x, y: (mp.sqrt(x * x + y * y),), 1, re, im)
    return out


def abs2(z) -> Exact:
    """|z|^2 = re^2 + im^2."""
    re, im = _planes(z)
    out, = _elementwise(lambda x, y: (x * x + y * y,), 1, re, im)
    return out


def angle(z) -> Exact:
    """atan2(im, re) in (-pi, pi] with IEEE signed zeros: arg(-1 - 0i) = -pi, arg(+0 - 0i) = -0."""
    re, im = _planes(z)
    re, im = np.broadcast_arrays(re, im)
    shape = re.shape
    vals = []
    with mpmath.workdps(DPS):
        for r, i in zip(re.ravel(), im.ravel(), strict=True):
            if i == 0:
                neg_im = _is_negative_zero(i)
                left = r < 0 or _is_negative_zero(r)
                v = +mp.pi if left else mp.mpf(0)
                vals.append(-v if neg_im else v)
            else:
                vals.append(mp.atan2(mpf16(i), mpf16(r)))
    return Exact.from_mpf(vals, shape)


def exp(z) -> tuple[Exact, Exact]:
    """e^re cos(im) + i e^re sin(im)."""
    re, im = _planes(z)

    def f(x, y):
        m = mp.exp(x)
        return m * mp.cos(y), m * mp.sin(y)

    out_re, out_im = _elementwise(f, 2, re, im)
    return out_re, out_im


def polar(magnitude, phase) -> tuple[Exact, Exact]:
    """r cos(t) + i r sin(t)."""
    out_re, out_im = _elementwise(lambda r, t: (r * mp.cos(t), r * mp.sin(t)), 2,
                                  _f16(magnitude), _f16(phase))
    return out_re, out_im


def modrelu(z, bias) -> tuple[Exact, Exact, dict[str, np.ndarray]]:
    """(|z| + b) z / |z| where |z| + b > 0 and z != 0, else 0; also float64 |z| and |z| + b."""
    re, im = _planes(z)
    re, im, b = np.broadcast_arrays(re, im, _f16(bias))
    shape = re.shape
    out_re, out_im, mags, shifted = [], [], [], []
    with mpmath.workdps(DPS):
        for x, y, c in zip(re.ravel(), im.ravel(), b.ravel(), strict=True):
            x, y, c = mpf16(x), mpf16(y), mpf16(c)
            r = mp.sqrt(x * x + y * y)
            a = r + c
            if r > 0 and a > 0:
                out_re.append(x * a / r)
                out_im.append(y * a / r)
            else:
                out_re.append(mp.mpf(0))
                out_im.append(mp.mpf(0))
            mags.append(float(r))
            shifted.append(float(a))
    stats = {"r": np.array(mags).reshape(shape), "shifted": np.array(shifted).reshape(shape)}
    return Exact.from_mpf(out_re, shape), Exact.from_mpf(out_im, shape), stats


def layer_norm(z, weight=None, bias=None, eps: float = 1e-5) -> tuple[Exact, Exact, dict[str, np.ndarray]]:
    """(z - mu) / sqrt(E|z - mu|^2 + eps) * w + b over the last dim (b on the real part).

    ``eps`` is taken exactly as the given float.  Also returns float64 statistics for
    the error bound: c = z - mu per plane, the variance v, and sum |z| per plane.
    """
    re, im = _planes(z)
    d = re.shape[-1]
    w = None if weight is None else _f16(weight)
    b = None if bias is None else _f16(bias)
    rows_re, rows_im = re.reshape(-1, d), im.reshape(-1, d)
    out_re, out_im, c_re, c_im, var, s1_re, s1_im = [], [], [], [], [], [], []
    with mpmath.workdps(DPS):
        e = mp.mpf(eps)
        for xr, xi in zip(rows_re, rows_im, strict=True):
            zr = [mpf16(v) for v in xr]
            zi = [mpf16(v) for v in xi]
            mur, mui = mp.fsum(zr) / d, mp.fsum(zi) / d
            cr = [v - mur for v in zr]
            ci = [v - mui for v in zi]
            v = mp.fsum(x * x + y * y for x, y in zip(cr, ci, strict=True)) / d
            r = 1 / mp.sqrt(v + e)
            for k in range(d):
                wk = 1 if w is None else mpf16(w[k])
                bk = 0 if b is None else mpf16(b[k])
                out_re.append(cr[k] * r * wk + bk)
                out_im.append(ci[k] * r * wk)
                c_re.append(float(cr[k]))
                c_im.append(float(ci[k]))
            var.append(float(v))
            s1_re.append(float(mp.fsum(abs(x) for x in zr)))
            s1_im.append(float(mp.fsum(abs(x) for x in zi)))
    shape = re.shape
    rows = shape[:-1] + (1,)
    stats = {
        "c_re": np.array(c_re).reshape(shape),
        "c_im": np.array(c_im).reshape(shape),
        "var": np.array(var).reshape(rows),
        "s1_re": np.array(s1_re).reshape(rows),
        "s1_im": np.array(s1_im).reshape(rows),
    }
    return Exact.from_mpf(out_re, shape), Exact.from_mpf(out_im, shape), stats


def embedding(weight, ids: np.ndarray, position=None, phase: float | None = None
              ) -> tuple[Exact, Exact, dict[str, np.ndarray]]:
    """Exact (W[ids] + P) e^{i phase} for planes W (2, vocab, d), real P broadcast to ids.shape + (d,).

    ``phase`` is taken exactly as the given float.  Also returns float64 |t| = |Wr + P| and
    |Wi| and the exact cos/sin of the phase for the error bound.
    """
    wr, wi = _planes(weight)
    rows_r, rows_i = wr[ids], wi[ids]
    pos = np.zeros_like(rows_r) if position is None else np.broadcast_to(_f16(position), rows_r.shape)
    with mpmath.workdps(DPS):
        c = mp.mpf(1) if phase is None else mp.cos(mp.mpf(float(phase)))
        s = mp.mpf(0) if phase is None else mp.sin(mp.mpf(float(phase)))
        t = [mpf16(x) + mpf16(p) for x, p in zip(rows_r.ravel(), pos.ravel(), strict=True)]
        im_in = [mpf16(y) for y in rows_i.ravel()]
        out_re = [x * c - y * s for x, y in zip(t, im_in, strict=True)]
        out_im = [x * s + y * c for x, y in zip(t, im_in, strict=True)]
        stats = {"t": np.array([float(abs(x)) for x in t]).reshape(rows_r.shape),
                 "wi": np.abs(rows_i.astype(np.float64)), "cos": float(c), "sin": float(s)}
    shape = rows_r.shape
    return Exact.from_mpf(out_re, shape), Exact.from_mpf(out_im, shape), stats


# --------------------------------------------------------- exact integer sums
def _ints(a: np.ndarray) -> np.ndarray:
    """fp16 array -> object array of Python ints n with a = n * 2**-24 (exact)."""
    a = _f16(a)
    return np.vectorize(lambda v: int(float(v) * 2**24), otypes=[object])(a) if a.size else a.astype(object)


def _from_scaled(n: np.ndarray, scale_log2: int, shape) -> Exact:
    """Exact of the integers ``n`` times 2**scale_log2."""
    with mpmath.workdps(DPS):
        vals = [mp.ldexp(mp.mpf(int(v)), scale_log2) for v in np.asarray(n, dtype=object).ravel()]
    return Exact.from_mpf(vals, shape)


def matmul(a, b) -> tuple[Exact, Exact, np.ndarray]:
    """Exact complex a @ b for planes a (2, ..., M, K) and b (2, ..., K, N) (torch.matmul batching).

    Also returns sum_k |ar br| + |ai bi| (= sum_k |ar bi| + |ai br| for the imaginary
    part, stacked as (2, ..., M, N)) in float64, rounded up, for the GEMM error bound.
    """
    ar, ai = _planes(a)
    br, bi = _planes(b)
    if ar.ndim < 2 or br.ndim < 2:
        raise ValueError("reference matmul takes >= 2-D operands; unsqueeze vectors first")
    Ar, Ai, Br, Bi = _ints(ar), _ints(ai), _ints(br), _ints(bi)
    re = np.matmul(Ar, Br) - np.matmul(Ai, Bi)
    im = np.matmul(Ar, Bi) + np.matmul(Ai, Br)
    shape = re.shape
    fa = [np.abs(x.astype(np.float64)) for x in (ar, ai, br, bi)]
    abs_re = np.matmul(fa[0], fa[2]) + np.matmul(fa[1], fa[3])
    abs_im = np.matmul(fa[0], fa[3]) + np.matmul(fa[1], fa[2])
    k = ar.shape[-1]
    abs_sums = np.stack((abs_re, abs_im)) * (1 + 4 * (k + 2) * 2.0**-53)
    return _from_scaled(re, -48, shape), _from_scaled(im, -48, shape), abs_sums


def linear(x, weight, bias=None) -> tuple[Exact, Exact, np.ndarray]:
    """Exact x W^T + b for planes x (2, ..., in), W (2, out, in), b (2, out); plus the |.| sums."""
    xr, xi = _planes(x)
    wr, wi = _planes(weight)
    Xr, Xi, Wr, Wi = _ints(xr), _ints(xi), _ints(wr).T, _ints(wi).T
    re = np.matmul(Xr, Wr) - np.matmul(Xi, Wi)
    im = np.matmul(Xr, Wi) + np.matmul(Xi, Wr)
    fx = [np.abs(v.astype(np.float64)) for v in (xr, xi)]
    fw = [np.abs(v.astype(np.float64)).T for v in (wr, wi)]
    abs_re = np.matmul(fx[0], fw[0]) + np.matmul(fx[1], fw[1])
    abs_im = np.matmul(fx[0], fw[1]) + np.matmul(fx[1], fw[0])
    if bias is not None:
        brr, bii = _planes(bias)
        re = re + _ints(brr) * 2**24  # bias n * 2**-24 = (n * 2**24) * 2**-48
        im = im + _ints(bii) * 2**24
        abs_re = abs_re + np.abs(brr.astype(np.float64))
        abs_im = abs_im + np.abs(bii.astype(np.float64))
    k = xr.shape[-1]
    abs_sums = np.stack((abs_re, abs_im)) * (1 + 4 * (k + 3) * 2.0**-53)
    shape = re.shape
    return _from_scaled(re, -48, shape), _from_scaled(im, -48, shape), abs_sums


def reduce_sum(z, dim: int | tuple[int, ...] | None = None, mean: bool = False) -> tuple[Exact, Exact, np.ndarray]:
    """Exact sum (or mean) over logical ``dim`` of planes z; plus sum |.| (divided by n for the mean)."""
    re, im = _planes(z)
    axes = tuple(range(re.ndim)) if dim is None else ((dim,) if isinstance(dim, int) else tuple(dim))
    axes = tuple(a % re.ndim for a in axes) if re.ndim else ()
    n = int(np.prod([re.shape[a] for a in axes])) if axes else 1
    outs = []
    for part in (re, im):
        s = _ints(part).sum(axis=axes) if axes else _ints(part)
        s = np.asarray(s, dtype=object)
        with mpmath.workdps(DPS):
            vals = [mp.ldexp(mp.mpf(int(v)), -24) / (n if mean else 1) for v in s.ravel()]
        outs.append(Exact.from_mpf(vals, s.shape))
    abs_sums = np.stack([np.abs(p.astype(np.float64)).sum(axis=axes) if axes else np.abs(p.astype(np.float64))
                         for p in (re, im)])
    if mean:
        abs_sums = abs_sums / max(n, 1)
    return outs[0], outs[1], abs_sums * (1 + 4 * (n + 2) * 2.0**-53)


# ---------------------------------------------------------------- zeta
def zeta_gamma(n: int, dps: int = ZETA_DPS):
    """gamma_n, the imaginary part of the n-th nontrivial zeta zero, from ``mpmath.zetazero``."""
    with mpmath.workdps(dps):
        return +mp.zetazero(n).imag


def position_table(max_len: int, gammas: Sequence[float], scale: float = 1.0) -> np.ndarray:
    """Exact PE[p, 2i] = sin(p g_i / 2pi), PE[p, 2i+1] = cos(p g_i / 2pi) (times ``scale``), as float64 hi.

    The frequencies g_i are taken exactly as the given float64 values.
    """
    d = 2 * len(gammas)
    out = np.empty((max_len, d))
    with mpmath.workdps(DPS):
        two_pi = 2 * mp.pi
        freqs = [mp.mpf(float(g)) / two_pi for g in gammas]
        s = mp.mpf(float(scale))
        for p in range(max_len):
            for i, f in enumerate(freqs):
                t = p * f
                out[p, 2 * i] = split(s * mp.sin(t))[0]
                out[p, 2 * i + 1] = split(s * mp.cos(t))[0]
    return out


def complex_diag_scan(x, nu, omega, h0=None) -> tuple[Exact, Exact]:
    """h_t = lambda h_{t-1} + x_t, lambda = exp(-exp(nu) + i omega), over axis -2 of x (2, B, S, D).

    ``x`` fp16 planes; ``nu``, ``omega`` (D,) and ``h0`` (2, B, D) any binary floats (exact
    mpfs).  The recurrence runs at DPS digits: S steps lose at most ~S 10^-DPS relative to
    sum |lambda|^(t-s) |x_s|, far below any fp16 or fp32 rounding.  Values below 2^-1100 are
    stored as 0: they round to 0 in every format (and hi = lo = 0), and a strong decay
    (|lambda| = exp(-10^8)) would otherwise make the rounding work on 10^8-bit integers.
    """
    xr, xi = _planes(x)
    batch, seq, d = xr.shape
    re, im = [], []
    with mpmath.workdps(DPS):
        lam = [mp.exp(mp.mpc(-mp.exp(_as_mpf(float(n))), _as_mpf(float(w)))) for n, w in zip(nu, omega, strict=True)]
        out = np.empty((batch, seq, d), dtype=object)
        for b in range(batch):
            for c in range(d):
                h = mp.mpc(0) if h0 is None else mp.mpc(_as_mpf(float(h0[0][b, c])), _as_mpf(float(h0[1][b, c])))
                for t in range(seq):
                    h = lam[c] * h + mp.mpc(mpf16(xr[b, t, c]), mpf16(xi[b, t, c]))
                    out[b, t, c] = h
        tiny = mp.ldexp(1, -1100)
        for v in out.ravel():
            re.append(v.real if abs(v.real) >= tiny else mp.mpf(0))
            im.append(v.imag if abs(v.imag) >= tiny else mp.mpf(0))
    return Exact.from_mpf(re, (batch, seq, d)), Exact.from_mpf(im, (batch, seq, d))


__all__ = [
    "DPS", "Exact", "abs2", "abs_", "add", "angle", "complex_diag_scan", "div", "embedding", "exp", "layer_norm", "linear", "matmul",
    "modrelu", "mpf16", "mul", "polar", "position_table", "reduce_sum", "round_to_format", "split",
    "sub", "zeta_gamma",
]
