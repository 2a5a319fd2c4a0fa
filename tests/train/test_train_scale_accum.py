"""Issue 13 items 24-25: the loss scale is a power of two; accumulated gradients are summed in fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from muse.train.optim import MixedPrecisionOptimizer
from muse.train.scaler import DynamicLossScaler


@pytest.mark.parametrize("kw", [dict(init_scale=1000.0), dict(init_scale=3.0), dict(growth_factor=3.0),
                                dict(backoff_factor=0.3)])
def test_item24_scaler_factors_must_be_powers_of_two(kw):
    with pytest.raises(ValueError, match="must be a power of two"):
        DynamicLossScaler(**kw)


def test_item24_scaler_state_must_hold_a_power_of_two():
    s = DynamicLossScaler(init_scale=2.0**-3, growth_factor=4.0, backoff_factor=0.25)
    state = s.state_dict()
    with pytest.raises(ValueError, match="scale must be a power of two"):
        DynamicLossScaler().load_state_dict({**state, "scale": 1000.0})


def test_item25_micro_batch_gradients_are_summed_in_fp32():
    """Micro-batch gradients 2048 and 1 (times scale 1): fp16 sums them to 2048 (its spacing at
    2048 is 2); fp32 keeps 2049. The step's pre-clip grad norm shows which sum was taken."""
    w = nn.Parameter(torch.zeros((), dtype=torch.float16))
    opt = MixedPrecisionOptimizer([("w", w)], lr=1e-3, weight_decay=0.0,
                                  loss_scaler=DynamicLossScaler(init_scale=1.0))
    opt.zero_grad()
    opt.backward(w.float() * 2048.0)
    opt.backward(w.float() * 1.0)
    res = opt.step(max_norm=None)
    assert not res.skipped and res.grad_norm == 2049.0
    opt.zero_grad()  # a fresh step starts from zero
    opt.backward(w.float() * 3.0)
    assert opt.step().grad_norm == 3.0


def test_item25_a_plain_backward_is_still_picked_up():
    w = nn.Parameter(torch.ones(2, dtype=torch.float16))
    opt = MixedPrecisionOptimizer([("w", w)], lr=1e-3, weight_decay=0.0,
                                  loss_scaler=DynamicLossScaler(init_scale=4.0))
    opt.zero_grad()
    (w.float().sum() * 4.0).backward()  # the caller scaled and ran backward itself
    assert opt.step().grad_norm == pytest.approx(2**0.5)
