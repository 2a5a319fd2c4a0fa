"""Probe (docs/experiments.md section 16): the copy path's gate told how confident the head is.

The gate becomes w·h + b + 10 u·log max_w p_head(w | t), u a learned scalar starting at 0 (the factor 10 lets
Adam's steps of about lr move the term by a useful amount within a short run), so the copy path can learn to
leave the head's confident rows alone. The loss forms the head's full log-softmax to get that maximum (fine at tiny
size; the library's fused loss computes each row's maximum but does not return it). ``MUSE_PROBE_FROZEN=1`` keeps u
at 0: the same loss path as the control. The library is patched in this process only (every model's copy path), then
`muse` runs with the given arguments, e.g.

    PYTHONPATH=. python scripts/pointer_confidence_probe.py train --model stage1 --preset mix-tiny \\
        --model-arg pointer_dim=16 ...
"""

import os
import sys

import torch
from torch import nn

import muse.models.base as B
import muse.nn.pointer as P
import muse.train.loss as L

FROZEN = os.environ.get("MUSE_PROBE_FROZEN") == "1"
orig_build = B.LanguageModel.build_pointer
orig_project = P.PointerMixture.project
orig_head_loss = L.head_loss


def build_pointer(self, device=None):
    orig_build(self, device)
    if self.pointer is not None:
        self.pointer.confidence_weight = nn.Parameter(torch.zeros((), device=device), requires_grad=not FROZEN)
        self.pointer.confidence = None


def project(self, h):
    q, k, theta, gate = orig_project(self, h)
    if self.confidence is not None:
        gate = gate + 10 * self.confidence_weight.to(gate.dtype) * self.confidence.to(gate.dtype)
    return q, k, theta, gate


def head_loss(model, hidden, input_ids, targets, reduction="mean", impl="auto", chunk_size=None):
    pointer = getattr(model, "pointer", None)
    if pointer is None:
        return orig_head_loss(model, hidden, input_ids, targets, reduction, impl, chunk_size)
    head = model.lm_head
    bias = None if head.bias is None else head.bias.float()
    logp = nn.functional.linear(hidden.float(), head.weight.float(), bias).log_softmax(-1)
    ignored = targets == L.IGNORE_INDEX
    vocab_nll = -logp.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    vocab_nll = torch.where(ignored, 0.0, vocab_nll)
    pointer.confidence = logp.detach().amax(-1)
    try:
        nll = pointer.nll(hidden, input_ids, targets, vocab_nll, L.IGNORE_INDEX)
    finally:
        pointer.confidence = None
    if reduction == "none":
        return nll
    total = nll.sum()
    return total / (~ignored).sum() if reduction == "mean" else total


B.LanguageModel.build_pointer = build_pointer
P.PointerMixture.project = project
L.head_loss = head_loss
from muse.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
