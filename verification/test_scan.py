"""The complex diagonal recurrence (muse.scan.complex_diag_scan) against exact references.

Bound (docs/numerics.md, "Complex diagonal recurrence"): per component
|y - h| <= E_t = gamma_(4L + 2 n_c + 19) M_t with M_t = sum_{s <= t} |lambda|^(t-s) |x_s|_1
(+ the initial state's term), then one fp16 rounding (L3) for fp16 outputs.  The accuracy property runs
under the eager and the compiled implementation (the chunked form is what torch.compile turns into GEMMs);
there is no Triton kernel for this scan.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import muse.complex as C
from muse.scan import complex_diag_scan, complex_diag_scan_sequential
from muse.scan.complex_diag import default_chunk_size
from verification import bounds as B
from verification import reference as R
from verification import strategies as vs
from verification.checks import check_close, check_ulps
from verification.harness import ct, impl_label, planes, run, tensor

# |lambda| values that matter: none at all, fast decay, the LRU ring, and |lambda| -> 1.
RADII = st.sampled_from([0.0, 1e-6, 0.3, 0.9, 0.99, 0.999, 0.9999, 0.99999, 1.0 - 2.0**-24])
OMEGAS = st.one_of(st.sampled_from([0.0, math.pi, -math.pi, 1e-4, 3.0, 10.0]),
                   st.floats(0.0, float(np.float32(math.pi)), width=32))


def _nu(radius: float) -> np.float32:
    """fp32 nu with exp(-exp(nu)) ~ radius; radius 0 -> a huge decay (|lambda| = 0 in every format)."""
    if radius == 0.0:
        return np.float32(20.0)
    return np.float32(math.log(-math.log(radius)))


@st.composite
def scan_case(draw):
    batch, seq, d = draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.integers(1, 3))
    x = draw(vs.complex_arrays((batch, seq, d), band=draw(st.sampled_from(["small", "mixed"]))))
    nu = np.array([_nu(draw(RADII)) for _ in range(d)], dtype=np.float32)
    omega = np.array([draw(OMEGAS) for _ in range(d)], dtype=np.float32)
    h0 = None
    if draw(st.booleans()):
        h0 = draw(vs.complex_arrays((batch, d), band="small")).astype(np.float32)
    chunk = draw(st.sampled_from([None, 1, 3, 8, 16]))
    return x, nu, omega, h0, chunk


def _scan(x, nu, omega, h0, chunk):
    """The op as the suite calls it (one function, so the compiled implementation keeps one graph per pattern)."""
    return complex_diag_scan(x, nu, omega, h0, chunk_size=chunk)[0]


@given(case=scan_case())
@example(case=(np.full((2, 1, 70, 1), 65504.0, dtype=np.float16), np.array([_nu(0.9999)], np.float32),
               np.array([np.pi], np.float32), None, None))
def test_complex_diag_scan_accuracy(device, impl, case):
    """fp16 in, fp16 out: 0.5 ulp(|h| + E) + E, E = gamma_(4L + 2 n_c + 19) M_t (mixed, per component), under
    the eager and the compiled implementation."""
    if impl == "triton":
        pytest.skip("complex_diag_scan has no Triton kernel")
    x, nu, omega, h0, chunk = case
    seq = x.shape[2]
    used = default_chunk_size(seq) if chunk is None else chunk
    init = None if h0 is None else ct(h0, device)
    y = run(impl, _scan, ct(x, device), tensor(nu, device), tensor(omega, device), init, chunk)
    out = planes(y)
    re, im = R.complex_diag_scan(x, nu, omega, h0)
    e = B.complex_diag_scan_abs(B.complex_diag_weights(x, nu, h0), seq, used)
    bound = [B.in_ulps(B.mixed(re.hi, e), re.hi), B.in_ulps(B.mixed(im.hi, e), im.hi)]

    def locate(c, ix):
        b, t, k = ix
        found = {"x": x[:, b, : t + 1, k], "nu": nu[k:k + 1], "omega": omega[k:k + 1]}
        if h0 is not None:
            found["h0"] = h0[:, b, k]
        return found

    check_ulps("complex_diag_scan", impl_label(device, impl), [out[0], out[1]], [re, im], bound, locate=locate,
               call=f"muse.scan.complex_diag_scan(C.ComplexTensor(torch.from_numpy(x)[:, None, :, None]), "
                    f"torch.from_numpy(nu), torch.from_numpy(omega), chunk_size={chunk})")


@pytest.mark.parametrize("radius, omega", [(0.999, 3.0), (0.9999, math.pi), (0.99999, 1e-3), (1.0 - 2.0**-20, 0.5)])
def test_complex_diag_scan_long_sequence(device, radius, omega):
    """S = 8192, |lambda| -> 1, fp32 output vs a float64 reference: finite and within E_t.

    The float64 loop's own error (<= (2t + 8) 2^-53 M_t) is added to the tolerance.
    """
    seq = 8192
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, seq, 2)).astype(np.float16)
    nu = np.array([_nu(radius), _nu(0.9)], dtype=np.float32)
    om = np.array([omega, 1.0], dtype=np.float32)
    y, f = complex_diag_scan(ct(x, device), tensor(nu, device), tensor(om, device), output_final_state=True,
                             out_dtype=torch.float32)
    got = planes(y)
    assert np.isfinite(got).all() and torch.isfinite(f.planes).all()
    ref, _ = complex_diag_scan_sequential(C.ComplexTensor(torch.from_numpy(x).double()),
                                          torch.from_numpy(nu).double(), torch.from_numpy(om).double())
    want = ref.planes.numpy()
    m = B.complex_diag_weights(x, nu)
    ref_err = (2 * np.arange(1, seq + 1)[None, :, None] + 8) * 2.0**-53 * m
    tol = np.broadcast_to(B.complex_diag_scan_abs(m, seq, default_chunk_size(seq)) + ref_err, got.shape)
    check_close("complex_diag_scan_long", device, got, want, rtol=0.0, atol=tol)
