"""Stage 1 stability (the seed's criteria): 100 random-input forward+backward trials with the
training loss (muse.train.loss.model_loss: fused fp32 cross-entropy) -> no NaN/Inf anywhere, every parameter's gradient norm in
[1e-6, 1e3].  Preset "tiny" on CPU in the ci/dev profiles, "seed" on CUDA and in thorough."""

from __future__ import annotations

import math

import torch

from muse.models import build_model
from muse.train.loss import linear_cross_entropy
from verification.plugin import profile_name
from verification.record import record_property

TRIALS = 100
GRAD_NORM_RANGE = (1e-6, 1e3)


def _preset(device: str) -> str:
    return "seed" if device == "cuda" or profile_name() == "thorough" else "tiny"


def test_stage1_forward_backward_is_stable(device):
    preset = _preset(device)
    torch.manual_seed(0)
    model = build_model("stage1", preset, device=device).train()
    vocab = model.config.vocab_size
    batch, seq = (2, 32) if preset == "tiny" else (2, 128)
    gen = torch.Generator().manual_seed(1234)
    lo, hi = GRAD_NORM_RANGE
    nonfinite_trials, out_of_range = 0, {}
    min_norm, max_norm = math.inf, 0.0
    for trial in range(TRIALS):
        ids = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
        targets = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
        hidden = model(ids, return_hidden=True)
        loss = linear_cross_entropy(hidden, model.lm_head.weight, targets, model.lm_head.bias)
        model.zero_grad(set_to_none=True)
        loss.backward()
        finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(hidden).all())
        for name, p in model.named_parameters():
            if not p.requires_grad:  # a frozen table (the Stage 1 position table) has no gradient
                continue
            g = p.grad
            if g is None:
                out_of_range.setdefault(name, []).append((trial, "no gradient"))
                continue
            finite &= bool(torch.isfinite(g).all())
            norm = float(g.float().norm())
            min_norm, max_norm = min(min_norm, norm), max(max_norm, norm)
            if not lo <= norm <= hi:
                out_of_range.setdefault(name, []).append((trial, norm))
        nonfinite_trials += int(not finite)
    stats = model.get_statistics()
    nonfinite_stages = sum(stats["nonfinite_by_stage"].values())
    ok = nonfinite_trials == 0 and not out_of_range and nonfinite_stages == 0
    record_property("stage1_stability", device, ok, preset=preset, trials=TRIALS,
                    nonfinite_rate=nonfinite_trials / TRIALS, min_grad_norm=min_norm, max_grad_norm=max_norm,
                    params_out_of_range=len(out_of_range))
    assert nonfinite_trials == 0, f"{nonfinite_trials}/{TRIALS} trials produced NaN/Inf ({stats})"
    assert nonfinite_stages == 0, stats
    assert not out_of_range, {k: v[:3] for k, v in out_of_range.items()}
