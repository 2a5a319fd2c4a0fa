"""Probe (docs/experiments.md section 30): the complex FFN's nonlinearity.

The variants' FFN is ComplexLinear d -> m, modReLU, ComplexLinear m -> d. Complex-network papers disagree on the
activation: Trabelsi et al. (2018, "Deep Complex Networks") found the split CReLU, ReLU(Re z) + i ReLU(Im z), better
than modReLU; Virtue et al. (2017) proposed the cardioid, (1 + cos arg z) z / 2; and real LMs moved from GELU MLPs to
gated ones (Shazeer 2020, GLU variants). This probe swaps the FFN of a Stage 1 variant for one of:

    modrelu     the library's FFN (the reference)
    split_gelu  GELU on each plane
    crelu       ReLU on each plane
    cardioid    (1 + Re z / |z|) z / 2
    glu         down(modReLU(up z) * (gate z)), the product complex; hidden width 2m/3 (rounded to a multiple of
                8) so the weights are as many as the reference's

Each nonlinearity is computed in fp32 from the fp16 planes and rounded once. The library is patched in this
process only, e.g.

    PYTHONPATH=. python scripts/ffn_activation_probe.py --act crelu -- train --model stage1 --preset mix-tiny \
        --device cpu --label-smoothing 0.1 ... --final-eval-tokens 32768 --eval-stride 128
"""
import argparse

import torch
import torch.nn.functional as F

import muse.models.stage1 as S
from muse import complex as C
from muse.cli import main
from muse.nn import ComplexLinear, ModReLU

parser = argparse.ArgumentParser()
parser.add_argument("--act", choices=["modrelu", "split_gelu", "crelu", "cardioid", "glu"], required=True)
parser.add_argument("muse_args", nargs=argparse.REMAINDER)
args = parser.parse_args()


def planewise(fn):
    def apply(z: C.ComplexTensor) -> C.ComplexTensor:
        p = z.planes
        return C.ComplexTensor(fn(p.float()).to(p.dtype))
    return apply


def cardioid(p: torch.Tensor) -> torch.Tensor:
    r = torch.sqrt(p[0] * p[0] + p[1] * p[1])
    scale = 0.5 * (1.0 + torch.where(r > 0, p[0] / r.clamp(min=1e-30), 1.0))
    return p * scale


ACTS = {"split_gelu": planewise(F.gelu), "crelu": planewise(F.relu), "cardioid": planewise(cardioid)}
orig_init = S.ComplexFeedForward.__init__


def init(self, d_model, d_hidden, dtype=torch.float16, device=None):
    if args.act != "glu":
        orig_init(self, d_model, d_hidden, dtype=dtype, device=device)
        return
    torch.nn.Module.__init__(self)
    m = max(8, round(2 * d_hidden / 3 / 8) * 8)
    self.up = ComplexLinear(d_model, m, dtype=dtype, device=device)
    self.gate = ComplexLinear(d_model, m, dtype=dtype, device=device)
    self.activation = ModReLU(m, dtype=dtype, device=device)
    self.down = ComplexLinear(m, d_model, dtype=dtype, device=device)


def forward(self, z):
    if args.act == "modrelu":
        return self.down(self.activation(self.up(z)))
    if args.act == "glu":
        return self.down(self.activation(self.up(z)) * self.gate(z))
    return self.down(ACTS[args.act](self.up(z)))


S.ComplexFeedForward.__init__ = init
S.ComplexFeedForward.forward = forward
print(f"[ffn_activation_probe] act={args.act}", flush=True)
muse_args = args.muse_args[1:] if args.muse_args[:1] == ["--"] else args.muse_args
raise SystemExit(main(muse_args))
