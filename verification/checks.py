"""The one assertion path for numeric comparisons (after scipy's FuncData).

:func:`check_ulps` compares results with exact references in ULPs against a bound;
:func:`check_close` compares two computed results (e.g. gradients) with rtol/atol.
Both record what they measured (:mod:`verification.record`) before asserting, and
fail with the same message: the max error, "k out of n bad", the worst points as
``args => got != wanted`` and a copy-pasteable repro of the worst one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from verification.record import STORE, Store, record_property
from verification.reference import Exact
from verification.ulp import F16, fmt_of, ulp_error

MAX_LISTED = 5


@dataclass(frozen=True)
class Arg:
    """A named input for failure messages; complex inputs are planes (2, *shape)."""

    name: str
    value: np.ndarray
    is_complex: bool = False

    @property
    def logical(self) -> np.ndarray:
        return np.asarray(self.value)[0] if self.is_complex else np.asarray(self.value)

    def at(self, shape: tuple[int, ...], index: tuple[int, ...]):
        """This input's value at output ``index`` (after broadcasting to ``shape``)."""
        v = np.asarray(self.value)
        if self.is_complex:
            re = np.broadcast_to(v[0], shape)[index]
            im = np.broadcast_to(v[1], shape)[index]
            return np.array([[re], [im]], dtype=v.dtype)
        return np.array([np.broadcast_to(v, shape)[index]], dtype=v.dtype)


def cplx(name: str, planes) -> Arg:
    return Arg(name, np.asarray(planes), True)


def real(name: str, values) -> Arg:
    return Arg(name, np.asarray(values), False)


def _literal(a: np.ndarray) -> str:
    """A copy-pasteable numpy literal that reproduces ``a`` exactly (fp16/fp32 values print exactly)."""
    a = np.asarray(a)
    return f"np.array({np.asarray(a, dtype=np.float64).tolist()!r}, dtype=np.{a.dtype.name})"


def _describe(values: dict[str, np.ndarray], complex_names: set[str]) -> str:
    parts = []
    for k, v in values.items():
        v = np.asarray(v)
        if k in complex_names and v.shape == (2, 1):
            parts.append(f"{k}={complex(float(v[0, 0]), float(v[1, 0]))!r}")
        elif v.size == 1:
            parts.append(f"{k}={float(v.ravel()[0])!r}")
        else:
            parts.append(f"{k}={np.asarray(v, dtype=np.float64).tolist()!r}")
    return ", ".join(parts)


def _repro(values: dict[str, np.ndarray], call: str | None) -> str:
    lines = ["  import numpy as np, torch", "  import muse.complex as C"]
    lines += [f"  {k} = {_literal(v)}" for k, v in values.items()]
    if call:
        lines.append(f"  {call}")
    return "\n".join(lines)


def _fail(title: str, rows: list[str], repro: str) -> None:
    __tracebackhide__ = True
    msg = title + "\n" + "\n".join(rows) + "\nrepro (worst case):\n" + repro
    raise AssertionError(msg)


def check_ulps(op: str, device: str, got: Sequence[np.ndarray], exact: Sequence[Exact], bound,
               *, args: Sequence[Arg] = (), where: Sequence[np.ndarray] | None = None,
               locate: Callable[[int, tuple[int, ...]], dict[str, np.ndarray]] | None = None,
               call: str | None = None, dtype=F16, record: bool = True, store: Store | None = None) -> float:
    """Assert |got - exact| <= bound (in ULPs of the exact value) for every checked element.

    ``got``/``exact``: one array per output component (re, im; or a single real one).
    ``bound``: a number of ULPs, or one array of per-element ULP bounds per component.
    ``where``: optional masks of the elements to check.  ``args`` give the inputs for
    the failure message (broadcast to the output); ``locate(component, index)`` can
    replace them for non-elementwise ops.  ``record=False`` keeps the measurement out of the
    report (meta-tests of deliberately wrong code); ``store`` overrides the process store.
    Returns the max error in ULPs.
    """
    __tracebackhide__ = True
    fmt = fmt_of(dtype)
    names = ("re", "im") if len(got) == 2 else ("",)
    constant = float(bound) if np.isscalar(bound) else None
    errs, bounds, index = [], [], []
    for c, (g, e) in enumerate(zip(got, exact, strict=True)):
        g = np.asarray(g, dtype=np.float64)
        if g.shape != e.shape:
            raise ValueError(f"{op}: result shape {g.shape} != reference shape {e.shape}")
        err = ulp_error(g, e.hi, e.lo, fmt)
        b = np.broadcast_to(np.asarray(bound if constant is not None else bound[c], dtype=np.float64), g.shape)
        mask = np.ones(g.shape, dtype=bool) if where is None else np.broadcast_to(where[c], g.shape)
        errs.append(err[mask])
        bounds.append(b[mask])
        index += [(c, tuple(int(i) for i in ix)) for ix in np.argwhere(mask)]
    err = np.concatenate(errs) if errs else np.zeros(0)
    bnd = np.concatenate(bounds) if bounds else np.zeros(0)
    bad = ~(err <= bnd)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / bnd)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    order = np.argsort(-ratio, kind="stable")[:MAX_LISTED] if err.size else []
    complex_names = {a.name for a in args if a.is_complex}

    def values_at(k: int) -> dict[str, np.ndarray]:
        c, ix = index[k]
        if locate is not None:
            return locate(c, ix)
        return {a.name: a.at(got[c].shape, ix) for a in args}

    def row(k: int) -> str:
        c, ix = index[k]
        g = float(np.asarray(got[c])[ix])
        e = exact[c]
        where_s = f"{names[c]}{list(ix)}"
        return (f"  {where_s}: {_describe(values_at(k), complex_names)} => got {g!r} != wanted "
                f"{float(e.f16[ix])!r} (exact {e.hi[ix] + e.lo[ix]!r}; error {err[k]:.6g} ULP, "
                f"bound {bnd[k]:.6g} ULP)")

    worst = None
    if err.size:
        k = int(order[0])
        c, ix = index[k]
        worst = {"index": f"{names[c]}{list(ix)}", "inputs": _describe(values_at(k), complex_names),
                 "got": float(np.asarray(got[c])[ix]), "exact": float(exact[c].hi[ix] + exact[c].lo[ix]),
                 "err_ulp": float(err[k]), "bound_ulp": float(bnd[k])}
    if record:
        (store or STORE).add_measurement(op, device, err, bnd, constant, worst)
    if bad.any():
        n_bad, n = int(bad.sum()), int(err.size)
        b_desc = f"{constant:.6g} ULP" if constant is not None else "per-element mixed bound"
        title = (f"{op} on {device}: {n_bad} out of {n} bad (max error {float(np.max(err)):.6g} ULP, "
                 f"bound {b_desc}; worst error/bound {float(np.max(ratio)):.4g})")
        _fail(title, [row(int(k)) for k in order if bad[int(k)]], _repro(values_at(int(order[0])), call))
    return float(np.max(err)) if err.size else 0.0


def check_close(name: str, device: str, got, want, *, rtol: float, atol: float = 0.0,
                args: Sequence[Arg] = (), call: str | None = None) -> float:
    """Assert |got - want| <= atol + rtol |want| elementwise (nan only against nan); returns max ratio."""
    __tracebackhide__ = True
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    if g.shape != w.shape:
        raise ValueError(f"{name}: shapes differ, got {g.shape} and {w.shape}")
    both_nan = np.isnan(g) & np.isnan(w)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_nan, 0.0, np.abs(g - w))
    tol = np.asarray(atol, dtype=np.float64) + rtol * np.abs(w)
    diff = np.where(np.isnan(diff), np.inf, diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / tol)
    bad = diff > tol
    max_ratio = float(np.max(ratio)) if ratio.size else 0.0
    record_property(name, device, not bad.any(), max_error_over_tol=max_ratio,
                    max_abs_error=float(np.max(diff)) if diff.size else 0.0, rtol=rtol,
                    atol=float(np.max(atol)) if np.size(atol) else 0.0)
    if bad.any():
        flat = np.argsort(-ratio.ravel(), kind="stable")[:MAX_LISTED]
        rows = []
        for k in flat:
            if not bad.ravel()[k]:
                continue
            ix = np.unravel_index(int(k), g.shape)
            rows.append(f"  [{', '.join(map(str, ix))}]: got {g[ix]!r} != wanted {w[ix]!r} "
                        f"(|diff| {diff[ix]:.3g} > atol + rtol|wanted| = {np.broadcast_to(tol, g.shape)[ix]:.3g})")
        values = {a.name: a.value for a in args}
        title = (f"{name} on {device}: {int(bad.sum())} out of {g.size} bad "
                 f"(max |diff|/tol {max_ratio:.4g}, rtol {rtol:g}, atol up to {float(np.max(atol)):g})")
        _fail(title, rows, _repro(values, call))
    return max_ratio


__all__ = ["Arg", "check_close", "check_ulps", "cplx", "real"]
