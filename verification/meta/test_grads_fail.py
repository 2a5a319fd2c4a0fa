"""The gradient properties can fail: a backward that is slightly wrong (as the thirty-third session's inductor
miscompile was, with a right forward) is flagged, under the eager implementation, in seconds."""

from __future__ import annotations

import pytest

from verification import checks, test_grads
from verification.record import Store


@pytest.mark.parametrize("prop, which", [("test_selective_diag_scan_gradients", 0), ("test_linear_gradients", 1),
                                         ("test_modrelu_gradients", 0), ("test_layer_norm_gradients", 0),
                                         ("test_layer_norm_gradients", 1), ("test_complex_retention_gradients", 0)],
                         ids=["selective_dx", "linear_dw", "modrelu_dx", "layer_norm_dx", "layer_norm_dparam",
                              "retention_dq"])
def test_a_wrong_backward_fails_its_property(monkeypatch, prop, which):
    """One gradient scaled by (1 + 2^-9): far outside the bounds (tens of u at these sizes), inside fp16's
    noise for a single element. Nothing reaches the report."""
    real = test_grads.run_grads

    def wrong(impl, op, args, grad_outputs):
        grads = real(impl, op, args, grad_outputs)
        if which < len(grads):  # a LayerNorm without weight and bias has no parameter gradient
            grads[which] = grads[which] * (1 + 2.0**-9)
        return grads

    monkeypatch.setattr(test_grads, "run_grads", wrong)
    monkeypatch.setattr(checks, "record_property", lambda *a, **k: None)
    monkeypatch.setattr(checks, "STORE", Store())
    with pytest.raises(AssertionError, match="grad"):
        getattr(test_grads, prop)(device="cpu", impl="eager")
