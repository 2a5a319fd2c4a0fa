"""lm_loss and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from muse.train import lm_loss, lr_at


def test_lm_loss_upcasts_fp16_logits_and_matches_fp32_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = (4 * torch.randn(2, 5, 11, generator=g)).half()
    targets = torch.randint(0, 11, (2, 5), generator=g)
    want = F.cross_entropy(logits.float().reshape(10, 11), targets.reshape(10))
    got = lm_loss(logits, targets)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)


def test_lm_loss_ignores_minus_100_and_means_over_scored_tokens():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 6, 7, generator=g)
    targets = torch.tensor([[1, 2, -100, 3, -100, 4]])
    keep = targets[0] != -100
    want = F.cross_entropy(logits[0, keep], targets[0, keep])
    assert torch.allclose(lm_loss(logits, targets), want, rtol=0, atol=1e-6)
    assert torch.allclose(lm_loss(logits, targets, reduction="sum"), want * 4, rtol=1e-6)


@pytest.mark.parametrize("logits, targets, exc, match", [
    (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), ValueError, "B, S, V"),
    (torch.zeros(1, 2, 3), torch.zeros(1, 2), TypeError, "targets"),
    (torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), TypeError, "logits"),
    (torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), ValueError, "B, S"),
])
def test_lm_loss_bad_inputs(logits, targets, exc, match):
    with pytest.raises(exc, match=match):
        lm_loss(logits, targets)


def test_lm_loss_bad_reduction():
    with pytest.raises(ValueError, match="reduction"):
        lm_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), reduction="none")


SCHED = dict(lr=1.0, min_lr=0.1, warmup=4, total_steps=14)


def test_schedule_values():
    lrs = [lr_at(s, **SCHED) for s in range(14)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]  # linear warmup reaches the peak at its last step
    assert lrs[4] == 1.0  # cosine starts at the peak
    assert lrs[9] == pytest.approx(0.1 + 0.5 * (1 + math.cos(math.pi * 0.5)) * 0.9)  # halfway: midpoint
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # monotone decay
    assert lrs[-1] > 0.1 and lr_at(14, **SCHED) == pytest.approx(0.1)  # floor reached at total_steps
    assert lr_at(100, **SCHED) == pytest.approx(0.1)


def test_schedule_without_warmup_starts_at_peak():
    assert lr_at(0, lr=3e-4, min_lr=0.0, warmup=0, total_steps=10) == 3e-4


@pytest.mark.parametrize("kw, match", [
    (dict(lr=-1.0), "lr"), (dict(min_lr=2.0), "min_lr"), (dict(warmup=20), "warmup"),
    (dict(total_steps=0), "total_steps"), (dict(warmup=-1), "warmup"),
])
def test_schedule_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        lr_at(0, **{**SCHED, **kw})
