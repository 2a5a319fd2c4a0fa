"""The gradient properties can fail: a backward that is slightly wrong (as the thirty-third session's inductor
miscompile was, with a right forward) is flagged, under the eager implementation, in seconds."""

from __future__ import annotations

import pytest

from verification import checks, test_bk, test_grads, test_hebbian
from verification.record import Store

CASES = [
    (test_grads, "test_selective_diag_scan_gradients", 0, "selective_dx"),
    (test_grads, "test_linear_gradients", 1, "linear_dw"),
    (test_grads, "test_modrelu_gradients", 0, "modrelu_dx"),
    (test_grads, "test_layer_norm_gradients", 0, "layer_norm_dx"),
    (test_grads, "test_layer_norm_gradients", 1, "layer_norm_dparam"),
    (test_grads, "test_complex_retention_gradients", 0, "retention_dq"),
    (test_hebbian, "test_hebbian_scan_and_gradients", 0, "hebbian_dq"),
    (test_bk, "test_bk_resolvent_and_gradient", 0, "bk_da"),
]


@pytest.mark.parametrize("module, prop, which", [c[:3] for c in CASES], ids=[c[3] for c in CASES])
def test_a_wrong_backward_fails_its_property(monkeypatch, module, prop, which):
    """One gradient scaled by (1 + 2^-9): far outside the bounds (tens of u at these sizes), inside fp16's
    noise for a single element. Nothing reaches the report."""
    real = module.run_grads

    def wrong(impl, op, args, grad_outputs):
        grads = real(impl, op, args, grad_outputs)
        if which < len(grads) and grads[which] is not None:  # a LayerNorm without weight and bias has no dW
            grads[which] = grads[which] * (1 + 2.0**-9)
        return grads

    monkeypatch.setattr(module, "run_grads", wrong)
    monkeypatch.setattr(checks, "record_property", lambda *a, **k: None)
    monkeypatch.setattr(checks, "STORE", Store())
    with pytest.raises(AssertionError, match="grad"):
        getattr(module, prop)(device="cpu", impl="eager")
