"""Probe (docs/experiments.md section 16): Stage 1's copy path reading both planes of the final complex state.

The head reads Re z; here the copy path's queries, keys and gate read [Re z, Im z] (2d wide), so the imaginary
plane, which the head never sees, could carry what the copy path matches on. The library is patched in this
process only, then `muse` runs with the given arguments, e.g.

    PYTHONPATH=. python scripts/pointer_complex_probe.py train --model stage1 --preset mix-tiny \
        --model-arg pointer_dim=16 --device cpu ...
"""
import sys

import torch

import muse.models.base as B
import muse.models.stage1 as s1
import muse.train.loss as L
from muse.nn.pointer import PointerMixture

orig_build = B.LanguageModel.build_pointer


def build_pointer(self, device=None):
    orig_build(self, device)
    if self.pointer is not None and isinstance(self, s1.Stage1Model):
        d = self.config.d_model
        self.pointer = PointerMixture(2 * d, self.config.pointer_dim, mode=self.config.pointer_mode, device=device)
        self.lm_head.register_forward_pre_hook(lambda m, a: (a[0][..., :d],))


def head_input(self, z):
    if self.pointer is None:
        return z.real
    return torch.cat([z.real, z.imag], -1)


orig_head_loss = L.head_loss


def head_loss(model, hidden, input_ids, targets, reduction="mean", impl="auto", chunk_size=None):
    pointer = getattr(model, "pointer", None)
    d = model.lm_head.weight.shape[1]
    if pointer is None or hidden.shape[-1] == d:
        return orig_head_loss(model, hidden, input_ids, targets, reduction, impl, chunk_size)
    head = model.lm_head
    vocab_nll = L.linear_cross_entropy(hidden[..., :d].contiguous(), head.weight, targets, head.bias, "none",
                                       chunk_size=chunk_size, impl=impl)
    nll = pointer.nll(hidden, input_ids, targets, vocab_nll, L.IGNORE_INDEX)
    total = nll.sum()
    return total / (targets != L.IGNORE_INDEX).sum() if reduction == "mean" else total


B.LanguageModel.build_pointer = build_pointer
s1.Stage1Model.head_input = head_input
L.head_loss = head_loss
from muse.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
