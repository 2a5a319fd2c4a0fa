"""Probe (docs/experiments.md section 26): Stage 1's head reading both planes of the final complex state.

The seed's head reads Re z and drops Im z: in the last block the imaginary plane only enters the final norm's
statistics.  A complex head Re(W z) = Wr Re z - Wi Im z is a real linear over [Re z, Im z] (2d wide), so here the
head reads both planes: d x vocab more parameters, the same logits' count.  The library is patched in this process
only (models without a copy path or a tied head), then `muse` runs with the given arguments, e.g.

    PYTHONPATH=. python scripts/head_planes_probe.py [--real-input] train --model stage1 --preset mix-tiny ...

``--real-input`` keeps the parameter count: the token table's imaginary plane is zeroed and gets no gradient, so the
tokens enter on the real axis (the zeta position table is added there too) and the head's extra d x vocab weights
take the imaginary table's place.
"""
import sys

import torch

import muse.models.stage1 as s1
from muse.nn.linear import RealLinear

orig_init = s1.Stage1Model.__init__


REAL_INPUT = sys.argv[1:2] == ["--real-input"]


def init(self, config, device=None):
    orig_init(self, config, device)
    if config.tie_head or config.pointer_dim:
        raise SystemExit("the probe covers untied heads without a copy path")
    self.lm_head = RealLinear(2 * config.d_model, config.vocab_size, dtype=config.dtype, device=device,
                              init=config.head_init)
    if REAL_INPUT:
        with torch.no_grad():
            self.embedding.weight[1].zero_()
        self.embedding.weight.register_hook(lambda g: torch.stack([g[0], torch.zeros_like(g[1])]))


def head_input(self, z):
    return torch.cat([z.real, z.imag], -1)


s1.Stage1Model.__init__ = init
s1.Stage1Model.head_input = head_input
from muse.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:] if REAL_INPUT else sys.argv[1:]))
