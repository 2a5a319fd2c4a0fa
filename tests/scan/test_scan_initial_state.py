"""The scans continued from a state (Phase 2's incremental decoding): a sequence cut in two and
run as two calls, the state of the first passed to the second, equals one call on the whole.

float64 throughout; tolerance 1e-12 of max |reference| (measured <= 1e-15, CPU, 2026-12-02).
"""

from __future__ import annotations

import pytest
import torch

from muse.scan import (
    bk_diagonal,
    bk_green_scan,
    bk_green_sequential,
    hebbian_parallel_with_state,
    hebbian_sequential,
)

pytestmark = pytest.mark.usefixtures("_one_thread")

TOL = 1e-12


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _diagonal(shape, seed=0) -> torch.Tensor:
    g = _gen(seed)
    v = torch.randn(*shape, generator=g, dtype=torch.float64)
    gamma = torch.rand(*shape, generator=g, dtype=torch.float64)
    return bk_diagonal(v, gamma, 2.0)


@pytest.mark.parametrize("cut", [1, 5, 12])
@pytest.mark.parametrize("z", [1j, 0.1 + 0.1j])
def test_bk_scan_continues_from_the_last_g(cut, z):
    a = _diagonal((3, 2, 13))
    ref = bk_green_sequential(a, z)  # (3, 2, 13)
    for scan in (bk_green_scan, bk_green_sequential):
        head = scan(a[..., :cut], z)
        tail = scan(a[..., cut:], z, initial_state=head[..., -1])
        err = (torch.cat([head, tail], dim=-1) - ref).abs().max().item()
        assert err <= TOL * ref.abs().max().item()
    zero = bk_green_scan(a, z, initial_state=torch.zeros_like(a[..., 0]))  # G_0 = 0 is the fresh start
    assert (zero - ref).abs().max().item() <= TOL * ref.abs().max().item()


def _hebbian(seed=0, s=21):
    g = _gen(seed)
    q, k, v = (torch.randn(2, 3, s, 4, generator=g, dtype=torch.float64) for _ in range(3))
    log_decay = -torch.rand(2, 3, s, generator=g, dtype=torch.float64)
    return q, k, v, log_decay


def _final_w(k, v, log_decay, eta):
    """W_S by the loop W_t = exp(l_t) W_{t-1} + eta k_t v_t^T."""
    w = k.new_zeros(*k.shape[:-2], k.shape[-1], v.shape[-1])
    for t in range(k.shape[-2]):
        w = torch.exp(log_decay[..., t, None, None]) * w + eta * k[..., t, :, None] * v[..., t, None, :]
    return w


@pytest.mark.parametrize("cut", [1, 8, 20])
@pytest.mark.parametrize("chunk_size", [None, 3, 8])
def test_hebbian_continues_from_the_fast_weights(cut, chunk_size):
    q, k, v, ld = _hebbian()
    eta = 0.7
    ref = hebbian_sequential(q, k, v, ld, eta)
    y1, w1 = hebbian_parallel_with_state(q[..., :cut, :], k[..., :cut, :], v[..., :cut, :], ld[..., :cut],
                                         eta, chunk_size)
    y2, w2 = hebbian_parallel_with_state(q[..., cut:, :], k[..., cut:, :], v[..., cut:, :], ld[..., cut:],
                                         eta, chunk_size, initial_state=w1)
    scale = ref.abs().max().item()
    assert (torch.cat([y1, y2], dim=-2) - ref).abs().max().item() <= TOL * scale
    w_ref = _final_w(k, v, ld, eta)
    assert (w2 - w_ref).abs().max().item() <= TOL * w_ref.abs().max().item()
    tail = hebbian_sequential(q[..., cut:, :], k[..., cut:, :], v[..., cut:, :], ld[..., cut:], eta,
                              initial_state=w1)  # the reference loop continues the same way
    assert (tail - ref[..., cut:, :]).abs().max().item() <= TOL * scale


def test_initial_state_of_the_wrong_shape_or_dtype_is_refused():
    a = _diagonal((2, 5))
    with pytest.raises(ValueError, match="initial_state"):
        bk_green_scan(a, 1j, initial_state=a[:, :2])
    with pytest.raises(ValueError, match="initial_state"):
        bk_green_sequential(a, 1j, initial_state=a[:, 0].to(torch.complex64))
    with pytest.raises(TypeError, match="initial_state"):
        bk_green_scan(a, 1j, initial_state=[0.0, 0.0])
    q, k, v, ld = _hebbian()
    with pytest.raises(ValueError, match="initial_state"):
        hebbian_parallel_with_state(q, k, v, ld, initial_state=torch.zeros(2, 3, 4, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="initial_state"):
        hebbian_sequential(q, k, v, ld, initial_state=torch.zeros(2, 3, 4, 4))
    y, w = hebbian_parallel_with_state(q[..., :0, :], k[..., :0, :], v[..., :0, :], ld[..., :0])
    assert y.shape == (2, 3, 0, 4) and torch.equal(w, torch.zeros(2, 3, 4, 4, dtype=torch.float64))
