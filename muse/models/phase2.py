"""Phase 2: the real-valued baseline with causal BK-Core and dissipative Hebbian token mixers.

    ids (B, S) -> Embedding + ZetaEmbedding (fixed) -> dropout -> [Phase2Block] x L
        -> LayerNorm -> Linear head (untied, with bias) -> logits (B, S, vocab), float32

    Phase2Block, for each mixer M in config.mixers (default BK-Core, then Hebbian):
        x = x + dropout(M(LN(x)))
    then x = x + dropout(FFN(LN(x))),  FFN = Linear(d, 4d) -> GELU -> Linear(4d, d).

BK-Core: per token and channel a complex potential V_i = v(x_i) - i Gamma(x_i),
Gamma = softplus(.) >= 0; features Re/Im of the causal resolvent diagonal
G_i = [(H_[1..i] - z)^{-1}]_{ii} of the tridiagonal H = -Laplacian + V (diagonal
V_i + 2, off-diagonals -1), |G_i| <= 1 / Im z (proof in :mod:`muse.scan.bk`).
G_i reads tokens 1..i only, so the mixer is causal.

Hebbian: per head fast weights W_t = exp(-Gamma_t dt) W_{t-1} + eta k_t v_t^T and
y_t = q_t^T W_t, q scaled by 1 / sqrt(d_head) as in dot-product attention.

The mixers live in :mod:`muse.nn.mixers` (their recurrences in :mod:`muse.scan`); this
module assembles them.  A new mixer is added by registering its class in :data:`MIXERS`,
its arguments in :meth:`Phase2Config.mixer_kwargs`, and naming it in ``config.mixers``.
Departures from the seed's Phase 2: ``docs/architecture.md``; design: ``docs/phase2.md``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from muse._checks import check_float, check_int, check_probability, check_shift, check_token_ids
from muse.init import ZetaEmbedding
from muse.models.base import LanguageModel
from muse.nn.mixers import BKCore, DissipativeHebbian


@dataclass
class Phase2Config:
    """Phase 2 baseline hyperparameters; validated on construction."""

    vocab_size: int = 50257  # GPT-2 BPE
    d_model: int = 512
    n_layers: int = 6
    max_seq_len: int = 1024
    n_heads: int = 8  # Hebbian heads; d_model must be divisible by it
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * d_model
    bk_channels: int = 1  # potentials per token
    bk_z: complex = 1j  # spectral shift; Im z = 1 gives |G| <= 1 and a contractive recursion
    hebbian_eta: float = 1.0  # Hebbian write strength
    hebbian_dt: float = 1.0  # time step of the decay exp(-Gamma dt)
    hebbian_chunk_size: int | None = 128  # chunk length of the parallel form; None = one chunk
    mixers: tuple[str, ...] = ("bk", "hebbian")  # token mixers of each block, in order (see MIXERS)
    dropout: float = 0.1
    zeta_scale: float = 1.0  # amplitude of the fixed zeta position table
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        check_int("vocab_size", self.vocab_size, min_value=1)
        check_int("d_model", self.d_model, min_value=1)
        check_int("n_layers", self.n_layers, min_value=0)
        check_int("max_seq_len", self.max_seq_len, min_value=1)
        check_int("n_heads", self.n_heads, min_value=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        check_int("ffn_mult", self.ffn_mult, min_value=1)
        check_int("bk_channels", self.bk_channels, min_value=1)
        self.bk_z = check_shift("bk_z", self.bk_z)
        check_float("hebbian_eta", self.hebbian_eta, min_value=0.0, min_inclusive=False)
        check_float("hebbian_dt", self.hebbian_dt, min_value=0.0, min_inclusive=False)
        if self.hebbian_chunk_size is not None:
            check_int("hebbian_chunk_size", self.hebbian_chunk_size, min_value=1)
        if isinstance(self.mixers, str) or not isinstance(self.mixers, (list, tuple)):
            raise TypeError(f"mixers must be a list or tuple of mixer names, got {type(self.mixers).__name__}")
        self.mixers = tuple(self.mixers)
        for name in self.mixers:
            if name not in MIXERS:
                raise ValueError(f"mixers: unknown mixer {name!r}; choose from {sorted(MIXERS)}")
        check_probability("dropout", self.dropout)
        check_float("zeta_scale", self.zeta_scale)
        check_float("layer_norm_eps", self.layer_norm_eps, min_value=0.0, min_inclusive=False)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def mixer_kwargs(self, name: str) -> dict:
        """Constructor arguments of mixer ``name`` (a key of :data:`MIXERS`) from these fields."""
        if name == "bk":
            return dict(d_model=self.d_model, channels=self.bk_channels, z=self.bk_z)
        if name == "hebbian":
            return dict(d_model=self.d_model, n_heads=self.n_heads, eta=self.hebbian_eta, dt=self.hebbian_dt,
                        chunk_size=self.hebbian_chunk_size)
        raise ValueError(f"mixers: unknown mixer {name!r}; choose from {sorted(MIXERS)}")

    @property
    def mixes_tokens(self) -> bool:
        """False for ``mixers=()``: embedding + FFN blocks see one position at a time."""
        return bool(self.mixers)

    def to_dict(self) -> dict:
        """Plain JSON-ready fields: bk_z as [re, im], mixers as a list (both accepted back)."""
        out = dataclasses.asdict(self)
        out["bk_z"] = [self.bk_z.real, self.bk_z.imag]
        out["mixers"] = list(self.mixers)
        return out


PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, max_seq_len=128, n_heads=4),  # CPU / CI
    "small": dict(d_model=256, n_layers=4, max_seq_len=512, n_heads=4),
    "seed": dict(d_model=512, n_layers=6, max_seq_len=1024, n_heads=8),  # Stage 1's seed size
}


MIXERS: dict[str, type[nn.Module]] = {"bk": BKCore, "hebbian": DissipativeHebbian}


class FeedForward(nn.Module):
    """Linear(d, m d) -> GELU -> Linear(m d, d)."""

    def __init__(self, config: Phase2Config, device=None):
        super().__init__()
        hidden = config.ffn_mult * config.d_model
        self.fc = nn.Linear(config.d_model, hidden, device=device)
        self.out = nn.Linear(hidden, config.d_model, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.fc(x)))  # (B, S, d)


class Phase2Block(nn.Module):
    """Pre-LN residual block: one branch per mixer in ``config.mixers``, then the FFN branch."""

    def __init__(self, config: Phase2Config, device=None):
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.mixer_names = config.mixers
        self.mixer_norms = nn.ModuleList(nn.LayerNorm(d, eps, device=device) for _ in config.mixers)
        self.mixers = nn.ModuleList(MIXERS[name](**config.mixer_kwargs(name), device=device)
                                    for name in config.mixers)
        self.ffn_norm = nn.LayerNorm(d, eps, device=device)
        self.ffn = FeedForward(config, device=device)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        for norm, mixer in zip(self.mixer_norms, self.mixers, strict=True):
            x = x + self.dropout(mixer(norm(x), stats))  # (B, S, d)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))  # (B, S, d)


class Phase2Model(LanguageModel):
    """The Phase 2 language model; ``forward`` returns float32 logits (B, S, vocab)."""

    config_cls = Phase2Config

    def __init__(self, config: Phase2Config | None = None, device=None, **overrides):
        super().__init__(config, device, **overrides)
        config = self.config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d, device=device)
        self.position = ZetaEmbedding(config.max_seq_len, d, trainable=False, scale=config.zeta_scale,
                                      dtype=config.dtype, device=device)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Phase2Block(config, device) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d, config.layer_norm_eps, device=device)
        self.lm_head = nn.Linear(d, config.vocab_size, device=device)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 style: linears N(0, 0.02), biases 0; branch outputs N(0, 0.02 / sqrt(#branches)).

        The token table is N(0, 1), the scale of the fixed zeta position table (RMS ~ 0.7
        at zeta_scale 1), so neither swamps the other.  Hebbian decay biases: see
        :class:`DissipativeHebbian`.
        """
        n_branches = max(1, self.config.n_layers * (len(self.config.mixers) + 1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02)
                module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for block in self.blocks:
            for mixer in block.mixers:
                if isinstance(getattr(mixer, "out", None), nn.Linear):
                    mixer.out.weight.normal_(0.0, 0.02 / math.sqrt(n_branches))
                if isinstance(mixer, DissipativeHebbian):
                    mixer.reset_gamma_bias()
            block.ffn.out.weight.normal_(0.0, 0.02 / math.sqrt(n_branches))
        self.token_embedding.weight.normal_(0.0, 1.0)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        input_ids = check_token_ids("input_ids", input_ids, self.config.vocab_size, self.config.max_seq_len)
        pos = self.position.lookup(input_ids, positions)  # (S, d) or (B, S, d)
        x = self.token_embedding(input_ids) + pos  # (B, S, d)
        return self.embedding_dropout(x)


def expected_parameter_count(config: Phase2Config) -> int:
    """Closed form of the parameter count (checks the module tree in tests); the position table is a buffer."""
    v, d, n, c, h = config.vocab_size, config.d_model, config.n_layers, config.bk_channels, config.n_heads
    hidden = config.ffn_mult * d
    mixer = {
        "bk": 2 * (d * c + c) + (2 * c * d + d),  # potential, gamma, out
        "hebbian": 4 * (d * d + d) + (d * h + h),  # q, k, v, out; gamma
    }
    block = sum(2 * d + mixer[m] for m in config.mixers) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    return v * d + n * block + 2 * d + (d * v + v)



__all__ = [
    "MIXERS", "PRESETS", "BKCore", "DissipativeHebbian", "FeedForward", "Phase2Block",
    "Phase2Config", "Phase2Model", "expected_parameter_count",
]
