"""Phase 3 Stage 1: the seed's complex model, exactly.

    ids (B, S) -> ComplexEmbedding -> [Phase3Stage1Block] x L -> ComplexLayerNorm
        -> real part -> Linear head -> logits (B, S, vocab)

    Phase3Stage1Block: z -> LN1 -> ComplexLinear -> ModReLU -> dropout -> + z -> LN2

No operation mixes positions, so the model is causal by construction (each logit
depends on its own token and position only).  With vocab 50257, d_model 512,
6 layers and max_seq_len 1024 it has 80,937,553 parameters, the position table
included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_float, check_int, check_probability, check_type
from muse.models.base import LanguageModel, logits_statistics
from muse.nn import (
    ComplexDropout,
    ComplexEmbedding,
    ComplexLayerNorm,
    ComplexLinear,
    ComplexRecurrence,
    ModReLU,
    RealLinear,
)
from muse.nn.mixers import OMEGA_INITS


@dataclass
class Phase3Stage1Config:
    """The seed's fields (its ``n_seq`` is our ``max_seq_len``) plus two explicit extras."""

    vocab_size: int = 50257  # GPT-2 BPE
    d_model: int = 512
    n_layers: int = 6
    max_seq_len: int = 1024  # seed default was 2048; 1024 gives the 80,937,553 count
    use_complex32: bool = True  # fp16 planes; False = fp32 planar baseline
    dropout: float = 0.1
    zeta_scale: float = 1.0  # amplitude of the zeta position table
    initial_phase: float | None = None  # optional constant rotation of the embedding
    layer_norm_eps: float = 1e-5
    # Variants (the seed is mixer "none", ffn "none"); see Stage1MixBlock.
    mixer: str = "none"  # "none" | "recurrence" (ComplexRecurrence, muse.nn.mixers)
    ffn: str = "none"  # "none" (the seed's ComplexLinear d->d + modReLU) | "complex" (d->d_ffn->d)
    d_ffn: int | None = None  # hidden width of the complex FFN; None: 2 * d_model
    d_state: int | None = None  # recurrence state channels; None: d_model
    r_min: float = 0.9  # |lambda| init ring (LRU; Griffin uses [0.9, 0.999])
    r_max: float = 0.999
    omega_init: str = "zeta"  # "zeta" | "uniform": phases of lambda

    def __post_init__(self):
        check_int("vocab_size", self.vocab_size, min_value=1)
        check_int("d_model", self.d_model, min_value=1)
        check_int("n_layers", self.n_layers, min_value=0)
        check_int("max_seq_len", self.max_seq_len, min_value=1)
        check_type("use_complex32", self.use_complex32, bool, "a bool")
        check_probability("dropout", self.dropout)
        check_float("zeta_scale", self.zeta_scale)
        if self.initial_phase is not None:
            check_float("initial_phase", self.initial_phase)
        check_float("layer_norm_eps", self.layer_norm_eps, min_value=0.0, min_inclusive=False)
        _check_variant_fields(self)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.use_complex32 else torch.float32

    @property
    def is_seed_block(self) -> bool:
        """True for the seed's block (no mixer, no FFN)."""
        return self.mixer == "none" and self.ffn == "none"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, max_seq_len=128),  # CPU / CI
    "small": dict(d_model=256, n_layers=4, max_seq_len=512),
    "seed": dict(d_model=512, n_layers=6, max_seq_len=1024),  # the seed report's model
    # The seed's size with a token mixer and an FFN: d_ffn = 2d gives a complex FFN the real
    # parameter count of a GPT's d -> 4d -> d MLP (8 d^2); the LRU/Griffin ring [0.9, 0.999].
    "mix": dict(d_model=512, n_layers=6, max_seq_len=1024, mixer="recurrence", ffn="complex", d_ffn=1024),
    "mix-tiny": dict(d_model=64, n_layers=2, max_seq_len=128, mixer="recurrence", ffn="complex", d_ffn=128),
}

MIXERS = ("none", "recurrence")
FFNS = ("none", "complex")


def _check_variant_fields(config: Phase3Stage1Config) -> None:
    check_type("mixer", config.mixer, str, f"one of {MIXERS}")
    if config.mixer not in MIXERS:
        raise ValueError(f"mixer must be one of {MIXERS}, got {config.mixer!r}")
    check_type("ffn", config.ffn, str, f"one of {FFNS}")
    if config.ffn not in FFNS:
        raise ValueError(f"ffn must be one of {FFNS}, got {config.ffn!r}")
    for name in ("d_ffn", "d_state"):
        if getattr(config, name) is not None:
            check_int(name, getattr(config, name), min_value=1)
    check_float("r_min", config.r_min, min_value=0.0)
    check_float("r_max", config.r_max, max_value=1.0, max_inclusive=False)
    if config.r_min > config.r_max:
        raise ValueError(f"r_min must be <= r_max, got r_min={config.r_min} and r_max={config.r_max}")
    check_type("omega_init", config.omega_init, str, f"one of {OMEGA_INITS}")
    if config.omega_init not in OMEGA_INITS:
        raise ValueError(f"omega_init must be one of {OMEGA_INITS}, got {config.omega_init!r}")


def _stats(z: C.ComplexTensor) -> dict[str, float]:
    with torch.no_grad():
        mag, ph = C.abs(z).float(), C.angle(z).float()
        return {
            "magnitude_mean": mag.mean().item(),
            "magnitude_std": mag.std().item() if mag.numel() > 1 else 0.0,
            "phase_mean": ph.mean().item(),
            "phase_std": ph.std().item() if ph.numel() > 1 else 0.0,
            "nonfinite": int((~z.isfinite()).sum().item()),
            "planar": z.is_planar(),
        }


class Phase3Stage1Block(nn.Module):
    """LN -> ComplexLinear -> ModReLU -> dropout -> residual -> LN."""

    def __init__(self, d_model: int, dropout: float = 0.1, eps: float = 1e-5,
                 dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.norm1 = ComplexLayerNorm(d_model, eps, dtype=dtype, device=device)
        self.linear = ComplexLinear(d_model, d_model, dtype=dtype, device=device)
        self.activation = ModReLU(d_model, dtype=dtype, device=device)
        self.dropout = ComplexDropout(dropout)
        self.norm2 = ComplexLayerNorm(d_model, eps, dtype=dtype, device=device)

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        h = self.dropout(self.activation(self.linear(self.norm1(z))))
        return self.norm2(C.add(h, z))


class ComplexFeedForward(nn.Module):
    """ComplexLinear d -> m, modReLU, ComplexLinear m -> d (the complex FFN of the variants)."""

    def __init__(self, d_model: int, d_hidden: int, dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.up = ComplexLinear(d_model, d_hidden, dtype=dtype, device=device)
        self.activation = ModReLU(d_hidden, dtype=dtype, device=device)
        self.down = ComplexLinear(d_hidden, d_model, dtype=dtype, device=device)

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        return self.down(self.activation(self.up(z)))


class SeedChannelMap(nn.Module):
    """The seed block's per-token map, ComplexLinear d -> d then modReLU (ffn "none" in a variant)."""

    def __init__(self, d_model: int, dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.linear = ComplexLinear(d_model, d_model, dtype=dtype, device=device)
        self.activation = ModReLU(d_model, dtype=dtype, device=device)

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        return self.activation(self.linear(z))


class Stage1MixBlock(nn.Module):
    """Pre-norm variant block: z + mixer(LN(z)), then z + ffn(LN(z)); dropout on each branch.

    ``mixer "recurrence"``: a :class:`ComplexRecurrence` (the only part that mixes positions,
    causally).  ``ffn "complex"``: :class:`ComplexFeedForward`; ``ffn "none"`` keeps the seed's
    per-token map (ComplexLinear d -> d + modReLU), so every variant has a nonlinearity.  The
    model's final LayerNorm closes the pre-norm stack.
    """

    def __init__(self, config: Phase3Stage1Config, dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.mixer = None
        if config.mixer == "recurrence":
            self.mixer_norm = ComplexLayerNorm(d, eps, dtype=dtype, device=device)
            self.mixer = ComplexRecurrence(d, config.d_state, config.r_min, config.r_max, config.omega_init,
                                           dtype=dtype, device=device)
        self.ffn_norm = ComplexLayerNorm(d, eps, dtype=dtype, device=device)
        if config.ffn == "complex":
            self.ffn = ComplexFeedForward(d, config.d_ffn or 2 * d, dtype=dtype, device=device)
        else:
            self.ffn = SeedChannelMap(d, dtype=dtype, device=device)
        self.dropout = ComplexDropout(config.dropout)

    def forward(self, z: C.ComplexTensor) -> C.ComplexTensor:
        if self.mixer is not None:
            z = C.add(z, self.dropout(self.mixer(self.mixer_norm(z))))
        return C.add(z, self.dropout(self.ffn(self.ffn_norm(z))))


def _block(config: Phase3Stage1Config, dtype: torch.dtype, device) -> nn.Module:
    """The seed's block for the seed configuration, a pre-norm Stage1MixBlock for the variants."""
    if config.is_seed_block:
        return Phase3Stage1Block(config.d_model, config.dropout, config.layer_norm_eps, dtype, device)
    return Stage1MixBlock(config, dtype, device)


class Phase3Stage1Model(LanguageModel):
    """The Stage 1 language model; ``forward`` returns logits (B, S, vocab) in the storage dtype."""

    config_cls = Phase3Stage1Config

    def __init__(self, config: Phase3Stage1Config | None = None, device=None, **overrides):
        super().__init__(config, device, **overrides)
        config = self.config
        dt = config.dtype
        self.embedding = ComplexEmbedding(config.vocab_size, config.d_model, config.max_seq_len,
                                          config.dropout, config.zeta_scale, config.initial_phase,
                                          dtype=dt, device=device)
        self.blocks = nn.ModuleList(_block(config, dt, device) for _ in range(config.n_layers))
        self.final_norm = ComplexLayerNorm(config.d_model, config.layer_norm_eps, dtype=dt, device=device)
        self.lm_head = RealLinear(config.d_model, config.vocab_size, dtype=dt, device=device)
        with torch.no_grad():  # GPT-2 style head init: N(0, 0.02), bias 0
            self.lm_head.weight.normal_(0.0, 0.02)
            self.lm_head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                return_diagnostics: bool = False):
        """Logits (B, S, vocab); with ``return_diagnostics`` also a dict of per-layer statistics."""
        diag: dict[str, dict] = {}
        self._count_forward()
        z = self.embedding(input_ids, positions)
        self._count_nonfinite(0, z.planes)
        if return_diagnostics:
            diag["embedding"] = _stats(z)
        for i, block in enumerate(self.blocks):
            z = block(z)
            self._count_nonfinite(i + 1, z.planes)
            if return_diagnostics:
                diag[f"layer_{i}"] = _stats(z)
        z = self.final_norm(z)
        logits = self.lm_head(z.real)
        self._count_nonfinite(-1, logits)
        if not return_diagnostics:
            return logits
        diag["final_norm"] = _stats(z)
        diag["output"] = logits_statistics(logits)
        return logits, diag


def create_phase3_stage1_model(vocab_size: int = 50257, d_model: int = 512, n_layers: int = 6,
                               max_seq_len: int = 1024, use_complex32: bool = True, dropout: float = 0.1,
                               zeta_scale: float = 1.0, device=None, **extra) -> Phase3Stage1Model:
    """Factory with the seed's signature (``max_seq_len`` defaults to 1024 here, see the config)."""
    config = Phase3Stage1Config(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers,
                                max_seq_len=max_seq_len, use_complex32=use_complex32, dropout=dropout,
                                zeta_scale=zeta_scale, **extra)
    return Phase3Stage1Model(config, device=device)


def expected_parameter_count(config: Phase3Stage1Config) -> int:
    """Closed form of the parameter count (checks the module tree in tests)."""
    v, d, n, s = config.vocab_size, config.d_model, config.n_layers, config.max_seq_len
    embedding = 2 * v * d + s * d
    block = 2 * (2 * d) + (2 * d * d + 2 * d) + d  # two LNs, complex linear + bias, modReLU bias
    if not config.is_seed_block:
        block = _variant_block_parameter_count(config)
    return embedding + n * block + 2 * d + (d * v + v)


def _variant_block_parameter_count(config: Phase3Stage1Config) -> int:
    d = config.d_model
    count = 2 * d  # the FFN's LayerNorm
    if config.mixer == "recurrence":
        n = config.d_state or d
        count += 2 * d + 2 * (2 * d * n) + d + 2 * n  # LayerNorm, B and C (no bias), D, nu and omega
    if config.ffn == "complex":
        m = config.d_ffn or 2 * d
        count += (2 * d * m + 2 * m) + m + (2 * m * d + 2 * d)  # up + bias, modReLU bias, down + bias
    else:
        count += (2 * d * d + 2 * d) + d  # the seed's linear + bias, modReLU bias
    return count


__all__ = [
    "FFNS", "MIXERS", "PRESETS", "ComplexFeedForward", "Phase3Stage1Block", "SeedChannelMap", "Stage1MixBlock", "Phase3Stage1Config", "Phase3Stage1Model",
    "create_phase3_stage1_model", "expected_parameter_count",
]
