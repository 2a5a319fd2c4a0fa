"""Phase 2: the real-valued baseline with causal BK-Core and dissipative Hebbian token mixers.

    ids (B, S) -> Embedding + ZetaEmbedding (fixed) -> dropout -> [Phase2Block] x L
        -> LayerNorm -> Linear head (untied, with bias) -> logits (B, S, vocab), float32

    Phase2Block, for each mixer M in config.mixers (default BK-Core, then Hebbian):
        x = x + dropout(M(LN(x)))
    then x = x + dropout(FFN(LN(x))),  FFN = Linear(d, 4d) -> GELU -> Linear(4d, d).

BK-Core: per token and channel a complex potential V_i = v(x_i) - i Gamma(x_i),
Gamma = softplus(.) >= 0; features Re/Im of the causal resolvent diagonal
G_i = [(H_[1..i] - z)^{-1}]_{ii} of the tridiagonal H = -Laplacian + V (diagonal
V_i + 2, off-diagonals -1), |G_i| <= 1 / Im z (proof in :mod:`muse.models.scans`).
The original used diag((H - z)^{-1}) of the whole sequence, which reads future
tokens; this one does not.

Hebbian: per head fast weights W_t = exp(-Gamma_t dt) W_{t-1} + eta k_t v_t^T and
y_t = q_t^T W_t, q scaled by 1 / sqrt(d_head) as in dot-product attention.

Both recurrences run in float32 (float64 after ``.double()``) with autocast off, so
a bf16/fp16 autocast run keeps them out of half precision; the linears around them
follow autocast.

The original's SNR-based memory selection and memory-resonance layer are left out;
a new mixer is added by registering a class in :data:`MIXERS` and naming it in
``config.mixers``.  See ``docs/phase2.md``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from muse._checks import (
    check_float,
    check_int,
    check_probability,
    check_token_ids,
)
from muse.init import ZetaEmbedding
from muse.models.base import LanguageModel, logits_statistics
from muse.models.scans import bk_diagonal, bk_green_scan, hebbian_parallel


def _parse_shift(value: object) -> complex:
    """bk_z as a complex number: a number, or a (re, im) pair (the form ``to_dict`` writes)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"bk_z as a sequence must be (re, im), got {len(value)} items")
        value = complex(check_float("bk_z[0]", value[0]), check_float("bk_z[1]", value[1]))
    if isinstance(value, bool) or not isinstance(value, numbers.Complex):
        raise TypeError(f"bk_z must be a complex number or a (re, im) pair, got {type(value).__name__}")
    value = complex(value)
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        raise ValueError(f"bk_z must be finite, got {value}")
    if value.imag <= 0.0:
        raise ValueError(f"bk_z must have Im bk_z > 0 (it bounds |G| <= 1 / Im bk_z), got {value}")
    return value


@dataclass
class Phase2Config:
    """Phase 2 baseline hyperparameters; validated on construction."""

    vocab_size: int = 50257  # GPT-2 BPE
    d_model: int = 512
    n_layers: int = 6
    max_seq_len: int = 1024
    n_heads: int = 8  # Hebbian heads; d_model must be divisible by it
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * d_model
    bk_channels: int = 1  # potentials per token (the original used one)
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
        self.bk_z = _parse_shift(self.bk_z)
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


def _stats(x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        xf = x.float()
        return {
            "mean": xf.mean().item(),
            "std": xf.std().item() if xf.numel() > 1 else 0.0,
            "abs_max": xf.abs().max().item() if xf.numel() else 0.0,
            "nonfinite": int((~torch.isfinite(xf)).sum().item()),
        }


def _recurrence_dtype(x: torch.Tensor) -> torch.dtype:
    """float32, or float64 for a float64 model: the recurrences never run in half precision."""
    return torch.promote_types(x.dtype, torch.float32)


def _no_autocast(x: torch.Tensor):
    """Switch autocast off around a recurrence, so a bf16/fp16 AMP run keeps it in fp32."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y > 0: log(expm1(y))."""
    return torch.log(torch.expm1(y))


class BKCore(nn.Module):
    """Causal non-Hermitian resolvent features: x (B, S, d) -> Linear(Re G, Im G) (B, S, d).

    V_i = potential(x_i) - i softplus(gamma(x_i)) per channel; a_i = V_i + 2;
    G_i = theta_{i-1} / theta_i by :func:`bk_green_scan`.
    """

    def __init__(self, config: Phase2Config, device=None):
        super().__init__()
        d, c = config.d_model, config.bk_channels
        self.z = config.bk_z
        self.potential = nn.Linear(d, c, device=device)
        self.gamma = nn.Linear(d, c, device=device)
        self.out = nn.Linear(2 * c, d, device=device)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        rdt = _recurrence_dtype(x)
        v = self.potential(x).to(rdt).transpose(1, 2)  # (B, C, S)
        gamma = F.softplus(self.gamma(x).to(rdt)).transpose(1, 2)  # (B, C, S), >= 0: dissipation
        with _no_autocast(x):
            g = bk_green_scan(bk_diagonal(v, gamma), self.z)  # (B, C, S) complex, |g| <= 1 / Im z
        feats = torch.cat([g.real, g.imag], dim=1).transpose(1, 2)  # (B, S, 2C)
        if stats is not None:
            with torch.no_grad():
                stats["bk_green_abs_max"] = g.abs().max().item() if g.numel() else 0.0
                stats["bk_gamma_mean"] = gamma.mean().item() if gamma.numel() else 0.0
        return self.out(feats.to(x.dtype))  # (B, S, d)


class DissipativeHebbian(nn.Module):
    """Decayed causal linear attention: y_t = eta sum_{s<=t} exp(L_t - L_s) (q_t . k_s) v_s, per head.

    L_t = -dt sum_{r<=t} Gamma_r with Gamma = softplus(linear(x)) >= 0 per head and token.
    q is scaled by 1 / sqrt(d_head) so q . k has unit scale at init, as in attention.
    Gamma's bias starts at RetNet's per-head retentions exp(-Gamma dt) = 1 - 2^(-5-h),
    so heads begin with memory lengths from 32 to 2^(4+H) tokens.
    """

    def __init__(self, config: Phase2Config, device=None):
        super().__init__()
        d, h = config.d_model, config.n_heads
        self.n_heads, self.d_head = h, config.d_head
        self.eta, self.dt = config.hebbian_eta, config.hebbian_dt
        self.chunk_size = config.hebbian_chunk_size
        self.q = nn.Linear(d, d, device=device)
        self.k = nn.Linear(d, d, device=device)
        self.v = nn.Linear(d, d, device=device)
        self.gamma = nn.Linear(d, h, device=device)
        self.out = nn.Linear(d, d, device=device)

    @torch.no_grad()
    def reset_gamma_bias(self) -> None:
        """Bias b_h with exp(-softplus(b_h) dt) = 1 - 2^(-5-h)."""
        h = torch.arange(self.n_heads, dtype=torch.float64)
        gamma = -torch.log1p(-torch.exp2(-5.0 - h)) / self.dt  # (H,)
        self.gamma.bias.copy_(_inverse_softplus(gamma).to(self.gamma.bias.dtype))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, dh)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        b, s, d = x.shape
        rdt = _recurrence_dtype(x)
        q = self._heads(self.q(x).to(rdt)) / math.sqrt(self.d_head)  # (B, H, S, dh)
        k = self._heads(self.k(x).to(rdt))  # (B, H, S, dh)
        v = self._heads(self.v(x).to(rdt))  # (B, H, S, dh)
        log_decay = -self.dt * F.softplus(self.gamma(x).to(rdt)).transpose(1, 2)  # (B, H, S), <= 0
        with _no_autocast(x):
            y = hebbian_parallel(q, k, v, log_decay, self.eta, self.chunk_size)  # (B, H, S, dh)
        if stats is not None:
            with torch.no_grad():
                stats["hebbian_retention_mean"] = log_decay.exp().mean().item() if log_decay.numel() else 0.0
        return self.out(y.transpose(1, 2).reshape(b, s, d).to(x.dtype))  # (B, S, d)


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
        self.mixers = nn.ModuleList(MIXERS[name](config, device=device) for name in config.mixers)
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

    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        check_token_ids("input_ids", input_ids, self.config.vocab_size, self.config.max_seq_len)
        pos = self.position.lookup(input_ids, positions)  # (S, d) or (B, S, d)
        x = self.token_embedding(input_ids) + pos  # (B, S, d)
        return self.embedding_dropout(x)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                return_diagnostics: bool = False, return_hidden: bool = False):
        """Logits (B, S, vocab); with ``return_diagnostics`` also a dict of per-layer statistics.

        ``return_hidden=True`` returns the (B, S, d) input of ``lm_head`` instead (for
        :func:`muse.train.loss.model_loss`, which never forms the full logits).
        """
        diag: dict[str, dict] = {}
        self._count_forward()
        x = self._embed(input_ids, positions)
        self._count_nonfinite(0, x)
        if return_diagnostics:
            diag["embedding"] = _stats(x)
        for i, block in enumerate(self.blocks):
            stats: dict | None = {} if return_diagnostics else None
            x = block(x, stats)
            self._count_nonfinite(i + 1, x)
            if return_diagnostics:
                diag[f"layer_{i}"] = {**_stats(x), **stats}
        x = self.final_norm(x)
        if return_hidden:
            return x
        logits = self.lm_head(x)  # (B, S, vocab)
        self._count_nonfinite(-1, logits)
        if not return_diagnostics:
            return logits
        diag["final_norm"] = _stats(x)
        diag["output"] = logits_statistics(logits)
        return logits, diag


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
