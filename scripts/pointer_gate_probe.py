"""Probe (docs/experiments.md section 16): the copy path's gate as a small MLP of h (d -> 64 -> GELU -> 1).

The library's gate is linear in h; the head's confidence, which should decide how much mass the copy path may take,
is not. The library is patched in this process only (every model's copy path), then `muse` runs with the given
arguments, e.g.

    PYTHONPATH=. python scripts/pointer_gate_probe.py train --model stage1 --preset mix-tiny --model-arg pointer_dim=16 ...
"""
import sys

import torch
from torch import nn

import muse.models.base as B
import muse.nn.pointer as P

HID = 64
orig_build = B.LanguageModel.build_pointer


def build_pointer(self, device=None):
    orig_build(self, device)
    ptr = self.pointer
    if ptr is not None:
        d = ptr.query.in_features
        ptr.gate_in = nn.Linear(d, HID, device=device, dtype=torch.float32)
        old = ptr.gate
        ptr.gate = nn.Linear(HID, 1, device=device, dtype=torch.float32)
        with torch.no_grad():
            ptr.gate.weight.zero_()
            ptr.gate.bias.copy_(old.bias)


def project(self, h):
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    h = h.to(acc)
    q = nn.functional.normalize(nn.functional.linear(h, self.query.weight.to(acc)), dim=-1)
    k = nn.functional.normalize(nn.functional.linear(h, self.key.weight.to(acc)), dim=-1)
    z = nn.functional.gelu(nn.functional.linear(h, self.gate_in.weight.to(acc), self.gate_in.bias.to(acc)))
    gate = nn.functional.linear(z, self.gate.weight.to(acc), self.gate.bias.to(acc))[..., 0]
    return q, k, self.log_theta.to(acc).exp(), gate


B.LanguageModel.build_pointer = build_pointer
P.PointerMixture.project = project
from muse.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
