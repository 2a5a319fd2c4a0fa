"""GPT reference model: the decoder-only Transformer users would otherwise train (nanoGPT-style).

    ids (B, S) -> Embedding + learned position Embedding -> dropout -> [GPTBlock] x L
        -> LayerNorm -> Linear head (untied, no bias; muse.nn.PaddedLinear) -> logits (B, S, vocab)

    GPTBlock (pre-LN):  x = x + dropout(proj(attention(LN(x))))
                        x = x + dropout(MLP(LN(x))),  MLP = Linear(d, 4d) -> GELU -> Linear(4d, d)
                                                (muse.nn.RealFeedForward, shared with Phase 2)

Attention is ``F.scaled_dot_product_attention(is_causal=True)`` over ``n_heads`` heads
(fused kernels on CUDA, the math path on CPU); masked scores are -inf, so a position
never receives anything from a later one, not even a rounding error.

Initialisation is GPT-2's: every linear and embedding N(0, 0.02), biases 0, and the
two residual output projections of each block N(0, 0.02 / sqrt(2 n_layers)), so the
residual stream's variance does not grow with depth.

:meth:`GPTModel.step` decodes incrementally with a :class:`KVCache` (the keys and
values of earlier positions), giving the same logits as a full forward.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from muse._checks import (
    check_choice,
    check_float,
    check_int,
    check_probability,
    check_tensor,
    check_token_ids,
    check_type,
)
from muse.models.base import LanguageModel, check_config_sizes, pointer_parameter_count
from muse.nn import PaddedLinear, RealFeedForward
from muse.nn.pointer import MODES as POINTER_MODES


@dataclass
class GPTConfig:
    """GPT hyperparameters; validated on construction."""

    vocab_size: int = 50257  # GPT-2 BPE
    d_model: int = 512
    n_layers: int = 6
    max_seq_len: int = 1024  # rows of the learned position table
    n_heads: int = 8  # d_model must be divisible by it
    ffn_mult: int = 4  # MLP hidden width = ffn_mult * d_model
    dropout: float = 0.1  # embedding, attention weights, both residual branches
    bias: bool = True  # biases in the linears and LayerNorms (GPT-2 has them); the head never has one
    layer_norm_eps: float = 1e-5
    pointer_dim: int = 0  # key width of the learned copy path (muse.nn.PointerMixture); 0 = none
    pointer_mode: str = "cache"  # its mixture: "cache" (a gate of h) | "sentinel" (the head competes with the positions)

    def __post_init__(self):
        check_config_sizes(self, heads=True)
        check_int("pointer_dim", self.pointer_dim, min_value=0)
        check_choice("pointer_mode", self.pointer_mode, POINTER_MODES)
        check_probability("dropout", self.dropout)
        check_type("bias", self.bias, bool, "a bool")
        check_float("layer_norm_eps", self.layer_norm_eps, min_value=0.0, min_inclusive=False)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {  # Stage 1's widths, depths and lengths
    "tiny": dict(d_model=64, n_layers=2, max_seq_len=128, n_heads=4),  # CPU / CI
    "small": dict(d_model=256, n_layers=4, max_seq_len=512, n_heads=4),
    "seed": dict(d_model=512, n_layers=6, max_seq_len=1024, n_heads=8),  # 70,902,784 parameters
}


@dataclass
class KVCache:
    """Keys and values of the ``length`` positions decoded so far: one (B, H, length, d_head) pair per layer."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int  # the next token sits at this position
    batch_size: int


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: one fused qkv linear, SDPA, an output projection."""

    def __init__(self, config: GPTConfig, device=None):
        super().__init__()
        d = config.d_model
        self.n_heads, self.d_head = config.n_heads, config.d_head
        self.qkv = nn.Linear(d, 3 * d, bias=config.bias, device=device)
        self.proj = nn.Linear(d, d, bias=config.bias, device=device)
        self.attn_dropout = config.dropout

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, S, dh)

    def attend(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(output (B, S, d), (k, v)): x's queries against ``past`` keys/values followed by x's own.

        ``past`` holds (B, H, P, dh) keys and values of the P positions before x; the
        returned k, v (B, H, P + S, dh) include them.
        """
        b, s, d = x.shape
        q, k, v = (self._heads(t) for t in self.qkv(x).split(d, dim=-1))  # (B, H, S, dh) each
        p = 0
        if past is not None:
            p = past[0].shape[2]
            k = torch.cat([past[0], k], dim=2)  # (B, H, P + S, dh)
            v = torch.cat([past[1], v], dim=2)
        dropout = self.attn_dropout if self.training else 0.0
        if p == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif s == 1:  # one new query sees every cached position
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:  # query i (position p + i) sees keys 0 .. p + i
            keep = torch.arange(p + s, device=x.device) <= torch.arange(p, p + s, device=x.device)[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(b, s, d)  # (B, S, d)
        return self.proj(y), (k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(x)[0]  # (B, S, d)


class GPTBlock(nn.Module):
    """Pre-LN Transformer block: attention branch, then MLP branch, each with residual dropout."""

    def __init__(self, config: GPTConfig, device=None):
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.attn_norm = nn.LayerNorm(d, eps, bias=config.bias, device=device)
        self.attn = CausalSelfAttention(config, device)
        self.mlp_norm = nn.LayerNorm(d, eps, bias=config.bias, device=device)
        self.mlp = RealFeedForward(config.d_model, config.ffn_mult * config.d_model, bias=config.bias,
                                   device=device)
        self.dropout = nn.Dropout(config.dropout)

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """(x after the block, (k, v) including ``past``): see :meth:`CausalSelfAttention.attend`."""
        a, kv = self.attn.attend(self.attn_norm(x), past)
        x = x + self.dropout(a)  # (B, S, d)
        return x + self.dropout(self.mlp(self.mlp_norm(x))), kv

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """``stats`` (the model's diagnostics dict for this block) gets no entries from this block."""
        return self.step(x)[0]  # (B, S, d)


def _check_positions(positions: object, input_ids: torch.Tensor, max_seq_len: int) -> torch.Tensor:
    """Integer positions of shape (B, S) or (S,) with values in [0, max_seq_len)."""
    check_tensor("positions", positions)
    if positions.dtype.is_floating_point or positions.dtype.is_complex or positions.dtype == torch.bool:
        raise TypeError(f"positions must be an integer tensor, got {positions.dtype}")
    if positions.shape not in (input_ids.shape, input_ids.shape[1:]):
        raise ValueError(f"positions must have shape {tuple(input_ids.shape)} or ({input_ids.shape[1]},), "
                         f"got {tuple(positions.shape)}")
    if positions.numel():
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0 or hi >= max_seq_len:
            raise ValueError(f"positions must be in [0, {max_seq_len}), got values in [{lo}, {hi}]")
    return positions


class GPTModel(LanguageModel):
    """The GPT reference; ``forward`` returns float32 logits (B, S, vocab) (autocast's dtype under AMP)."""

    config_cls = GPTConfig

    def __init__(self, config: GPTConfig | None = None, device=None, **overrides):
        super().__init__(config, device, **overrides)
        config = self.config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d, device=device)
        self.position_embedding = nn.Embedding(config.max_seq_len, d, device=device)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(config, device) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d, config.layer_norm_eps, bias=config.bias, device=device)
        self.lm_head = PaddedLinear(d, config.vocab_size, bias=False, device=device)
        self.reset_parameters()
        self.build_pointer(device)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2: linears and embeddings N(0, 0.02), biases 0, residual projections N(0, 0.02 / sqrt(2 L))."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, 0.02)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        residual_std = 0.02 / math.sqrt(2 * max(self.config.n_layers, 1))
        for block in self.blocks:
            block.attn.proj.weight.normal_(0.0, residual_std)
            block.mlp.proj.weight.normal_(0.0, residual_std)
        if self.pointer is not None:
            self.pointer.reset_parameters()

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Token + position embeddings, then dropout: (B, S) ids -> (B, S, d)."""
        input_ids = check_token_ids("input_ids", input_ids, self.config.vocab_size, self.config.max_seq_len)
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (S,)
        else:
            _check_positions(positions, input_ids, self.config.max_seq_len)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, S, d)
        return self.embedding_dropout(x)

    @torch.no_grad()
    def step_hidden(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Incremental decoding (:meth:`LanguageModel.step` adds the head): the head input (B, T, d)
        of ``input_ids`` (B, T) placed after ``cache``.

        ``cache=None`` starts at position 0 (a prompt of any length T is one call); each
        later call appends T >= 1 tokens at positions ``cache.length ..``.  The outputs
        equal those of ``forward`` on the whole sequence (up to rounding).  Returns a new
        cache; the one passed in is left unchanged.  Runs without gradients; call
        ``eval()`` first, or dropout applies as in training.
        """
        past_len = 0
        if cache is not None:
            check_type("cache", cache, KVCache, "a KVCache or None")
            if len(cache.keys) != len(self.blocks) or len(cache.values) != len(self.blocks):
                raise ValueError(f"cache has {len(cache.keys)} layers, the model {len(self.blocks)}")
            past_len = cache.length
        input_ids = self.check_step(input_ids, cache)
        b, t = input_ids.shape
        positions = torch.arange(past_len, past_len + t, device=input_ids.device)  # (T,)
        x = self.embedding_dropout(self.token_embedding(input_ids) + self.position_embedding(positions))
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            past = None if cache is None else (cache.keys[i], cache.values[i])
            x, (k, v) = block.step(x, past)
            keys.append(k)
            values.append(v)
        return self.final_norm(x), KVCache(keys, values, past_len + t, b)


def expected_parameter_count(config: GPTConfig) -> int:
    """Closed form of the parameter count (checks the module tree in tests)."""
    v, d, n, s = config.vocab_size, config.d_model, config.n_layers, config.max_seq_len
    hidden, b = config.ffn_mult * d, int(config.bias)
    norm = d + b * d
    block = 2 * norm + (3 * d * d + b * 3 * d) + (d * d + b * d) + (d * hidden + b * hidden) + (hidden * d + b * d)
    return v * d + s * d + n * block + norm + d * v + pointer_parameter_count(config)


__all__ = [
    "PRESETS", "GPTBlock", "GPTConfig", "GPTModel", "KVCache", "CausalSelfAttention",
    "expected_parameter_count",
]
