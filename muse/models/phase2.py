"""Phase 2: the real-valued baseline with causal BK-Core and dissipative Hebbian token mixers.

    ids (B, S) -> Embedding + ZetaEmbedding (fixed) -> dropout -> [Phase2Block] x L
        -> LayerNorm -> Linear head (untied, with bias) -> logits (B, S, vocab), float32

    Phase2Block, for each mixer M in config.mixers (default BK-Core, then Hebbian):
        x = x + dropout(M(LN(x)))
    then x = x + dropout(FFN(LN(x))),  FFN = Linear(d, 4d) -> GELU -> Linear(4d, d)
    (muse.nn.RealFeedForward, shared with the GPT reference).

BK-Core: per token and channel a complex potential V_i = v(x_i) - i Gamma(x_i),
Gamma = softplus(.) >= 0; features Re/Im of the causal resolvent diagonal
G_i = [(H_[1..i] - z)^{-1}]_{ii} of the tridiagonal H = -Laplacian + V (diagonal
V_i + 2, off-diagonals -1), |G_i| <= 1 / Im z (proof in :mod:`muse.scan.bk`).
G_i reads tokens 1..i only, so the mixer is causal.

Hebbian: per head fast weights W_t = exp(-Gamma_t dt) W_{t-1} + eta k_t v_t^T and
y_t = q_t^T W_t, q scaled by 1 / sqrt(d_head) as in dot-product attention, y RMS-normalised
per head before the output projection.  BK-Core's default has 16 channels and LayerNorms
its features.  The ``original`` / ``original-tiny`` presets restore the seed's values.

The mixers live in :mod:`muse.nn.mixers` (their recurrences in :mod:`muse.scan`); this
module assembles them.  A new mixer is added by registering its class in :data:`MIXERS`,
its arguments in :meth:`Phase2Config.mixer_kwargs`, and naming it in ``config.mixers``.
Departures from the seed's Phase 2: ``docs/architecture.md``; design: ``docs/phase2.md``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from muse._checks import (
    check_choice,
    check_float,
    check_int,
    check_probability,
    check_shift,
    check_token_ids,
    check_type,
)
from muse.init import ZetaEmbedding, ZetaInitializer
from muse.models.base import LanguageModel, check_config_sizes, pointer_parameter_count
from muse.nn import PaddedLinear, RealFeedForward
from muse.nn.mixers import BKCore, DissipativeHebbian, HeadRMSNorm
from muse.nn.pointer import MODES as POINTER_MODES

INITS = ("gpt2", "zeta")


@dataclass
class Phase2Config:
    """Phase 2 baseline hyperparameters; validated on construction."""

    vocab_size: int = 50257  # GPT-2 BPE
    d_model: int = 512
    n_layers: int = 6
    max_seq_len: int = 1024
    n_heads: int = 8  # Hebbian heads; d_model must be divisible by it
    ffn_mult: int = 4  # FFN hidden width = ffn_mult * d_model
    bk_channels: int = 16  # potentials per token
    bk_z: complex = 1j  # spectral shift; Im z = 1 gives |G| <= 1 and a contractive recursion
    bk_norm: bool = False  # LayerNorm over the 2C resolvent features (hurt in a short CPU run: docs/phase2.md)
    bk_shift: float = 2.0  # diagonal a = V + bk_shift (2: H = -Laplacian + V; the original: 0)
    bk_coupling: float = 1.0  # off-diagonal product b c > 0 (the bound |G| <= 1 / Im z needs b c > 0)
    bk_dissipation: bool = True  # -i Gamma in the diagonal (the original left it out of BK-Core)
    hebbian_eta: float = 1.0  # Hebbian write strength
    hebbian_dt: float = 1.0  # time step of the decay exp(-Gamma dt)
    hebbian_chunk_size: int | None = 128  # chunk length of the parallel form; None = one chunk
    hebbian_norm: bool = True  # per-head RMS normalisation (learnable gain) of the read-out
    hebbian_q_scale: bool = True  # q / sqrt(d_head)
    hebbian_shared_decay: bool = False  # one Gamma per token for all heads (the original) vs one per head
    hebbian_gamma_min: float = 0.0  # floor added to Gamma = softplus(.) (the original's base_decay 0.001)
    mixer_bias: bool = True  # biases of the mixers' input projections (q, k, v, potential, gamma)
    head_bias: bool = True  # bias of the LM head
    init: str = "gpt2"  # "gpt2" (N(0, 0.02), scaled residual outputs) or "zeta" (the original's)
    mixers: tuple[str, ...] = ("bk", "hebbian")  # token mixers of each block, in order (see MIXERS)
    dropout: float = 0.1
    zeta_scale: float = 0.1  # amplitude of the fixed zeta position table (the original's: 1.0)
    layer_norm_eps: float = 1e-5
    pointer_dim: int = 0  # key width of the learned copy path (muse.nn.PointerMixture); 0 = none
    pointer_mode: str = "cache"  # its mixture: "cache" (a gate of h) | "sentinel" (the head competes with the positions)

    def __post_init__(self):
        check_config_sizes(self, heads=True)
        check_int("pointer_dim", self.pointer_dim, min_value=0)
        check_choice("pointer_mode", self.pointer_mode, POINTER_MODES)
        check_int("bk_channels", self.bk_channels, min_value=1)
        self.bk_z = check_shift("bk_z", self.bk_z)
        check_float("bk_shift", self.bk_shift)
        check_float("bk_coupling", self.bk_coupling, min_value=0.0, min_inclusive=False)
        for name in ("bk_norm", "bk_dissipation", "hebbian_norm", "hebbian_q_scale", "hebbian_shared_decay",
                     "mixer_bias", "head_bias"):
            check_type(name, getattr(self, name), bool, "a bool")
        check_float("hebbian_gamma_min", self.hebbian_gamma_min, min_value=0.0)
        check_choice("init", self.init, INITS)
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
            return dict(d_model=self.d_model, channels=self.bk_channels, z=self.bk_z, shift=self.bk_shift,
                        coupling=self.bk_coupling, dissipation=self.bk_dissipation, norm=self.bk_norm,
                        bias=self.mixer_bias)
        if name == "hebbian":
            return dict(d_model=self.d_model, n_heads=self.n_heads, eta=self.hebbian_eta, dt=self.hebbian_dt,
                        chunk_size=self.hebbian_chunk_size, norm=self.hebbian_norm, q_scale=self.hebbian_q_scale,
                        shared_decay=self.hebbian_shared_decay, gamma_min=self.hebbian_gamma_min,
                        bias=self.mixer_bias)
        raise ValueError(f"mixers: unknown mixer {name!r}; choose from {sorted(MIXERS)}")

    @property
    def mixes_tokens(self) -> bool:
        """False for ``mixers=()`` without a copy path: embedding + FFN blocks see one position at a time."""
        return bool(self.mixers) or self.pointer_dim > 0

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

# The original Phase 2's values (src/models/phase2/ of the seed repository) as far as the causal
# formulation allows; docs/phase2.md, "Departures from the original Phase 2", lists what differs.
ORIGINAL = dict(
    bk_channels=1, bk_z=0.1 + 0.1j, bk_norm=False, bk_shift=0.0, bk_coupling=0.01, bk_dissipation=False,
    hebbian_eta=0.1, hebbian_norm=False, hebbian_q_scale=False, hebbian_shared_decay=True,
    hebbian_gamma_min=0.001, mixer_bias=False, head_bias=False, init="zeta", zeta_scale=1.0,
)
PRESETS["original"] = {**PRESETS["seed"], **ORIGINAL}
PRESETS["original-tiny"] = {**PRESETS["tiny"], **ORIGINAL}


MIXERS: dict[str, type[nn.Module]] = {"bk": BKCore, "hebbian": DissipativeHebbian}


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
        self.ffn = RealFeedForward(d, config.ffn_mult * d, device=device)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        for norm, mixer in zip(self.mixer_norms, self.mixers, strict=True):
            x = x + self.dropout(mixer(norm(x), stats))  # (B, S, d)
        return x + self.dropout(self.ffn(self.ffn_norm(x)))  # (B, S, d)

    def step(self, x: torch.Tensor, states: list | None = None) -> tuple[torch.Tensor, list]:
        """Incremental form: x (B, T, d) after the tokens that left ``states`` (one per mixer;
        None = the start) -> (output (B, T, d), the mixers' states after x)."""
        if states is None:
            states = [None] * len(self.mixers)
        new = []
        for norm, mixer, state in zip(self.mixer_norms, self.mixers, states, strict=True):
            y, state = mixer.forward_with_state(norm(x), state)
            x = x + self.dropout(y)  # (B, T, d)
            new.append(state)
        return x + self.dropout(self.ffn(self.ffn_norm(x))), new  # (B, T, d)


@dataclass
class Phase2State:
    """Decoding state of :meth:`Phase2Model.step`: the tokens seen so far (``length``) and, per
    layer, one state per mixer in ``config.mixers`` order: BK-Core's last resolvent entry G
    (B, C) complex, the Hebbian fast weights W (B, H, d_head, d_head) real.  Its size does not
    depend on ``length``."""

    layers: list[list[torch.Tensor]]
    length: int  # the next token sits at this position
    batch_size: int


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
        self.lm_head = PaddedLinear(d, config.vocab_size, bias=config.head_bias, device=device)
        self.reset_parameters()
        self.build_pointer(device)

    @classmethod
    def upgrade_key(cls, name: str) -> str:
        """``blocks.<i>.ffn.out.*`` (the FFN's output linear before the FFN became
        :class:`~muse.nn.RealFeedForward`) -> ``blocks.<i>.ffn.proj.*``; other names unchanged."""
        return re.sub(r"^(blocks\.\d+\.ffn\.)out\.", r"\1proj.", name)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """``init="gpt2"``: linears N(0, 0.02), biases 0; branch outputs N(0, 0.02 / sqrt(#branches)).

        The token table is N(0, 1); the fixed zeta position table (RMS ~ 0.7 at zeta_scale 1) is
        scaled by zeta_scale = 0.1 so that tokens dominate (0.25: 10 % lower test PPL than 1.0 at the seed
        size and at tiny size; 0.1: 1.3 % lower again at the seed size, three seeds: docs/experiments.md,
        sections 8 and 9).  Hebbian decay biases: see
        :class:`DissipativeHebbian`.  ``init="zeta"``: see :meth:`_reset_zeta`.
        """
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, HeadRMSNorm)):
                module.reset_parameters()
        if self.config.init == "zeta":
            self._reset_zeta()
            return
        n_branches = max(1, self.config.n_layers * (len(self.config.mixers) + 1))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.02)
                if module.bias is not None:
                    module.bias.zero_()
        for block in self.blocks:
            for mixer in block.mixers:
                if isinstance(getattr(mixer, "out", None), nn.Linear):
                    mixer.out.weight.normal_(0.0, 0.02 / math.sqrt(n_branches))
                if isinstance(mixer, DissipativeHebbian):
                    mixer.reset_gamma_bias()
            block.ffn.proj.weight.normal_(0.0, 0.02 / math.sqrt(n_branches))
        self.token_embedding.weight.normal_(0.0, 1.0)
        if self.pointer is not None:
            self.pointer.reset_parameters()

    @torch.no_grad()
    def _reset_zeta(self) -> None:
        """The original Phase 2's init: every linear but the head keeps PyTorch's default bias and the
        singular vectors of its default weight, with singular values 0.02 / gamma_i (zeta zeros);
        the token table is the zeta position table x 0.02; the head N(0, 0.02).  Nothing to do on "meta"."""
        if self.lm_head.weight.is_meta:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not self.lm_head:
                module.reset_parameters()
                ZetaInitializer.initialize_linear_zeta(module, scale=0.02)
        ZetaInitializer.initialize_embedding_zeta(self.token_embedding, scale=0.02)
        self.lm_head.weight.normal_(0.0, 0.02)
        if self.lm_head.bias is not None:
            self.lm_head.bias.zero_()
        if self.pointer is not None:
            self.pointer.reset_parameters()

    @torch.no_grad()
    def step_hidden(self, input_ids: torch.Tensor, cache: Phase2State | None = None
                    ) -> tuple[torch.Tensor, Phase2State]:
        """Incremental decoding (:meth:`LanguageModel.step` adds the head): the head input (B, T, d)
        of ``input_ids`` (B, T) placed after ``cache``.

        O(1) work and memory per token: every part but the mixers is per token (the zeta position
        row is read at the absolute position ``cache.length``), BK-Core carries its last resolvent
        entry and the Hebbian its fast weights (:class:`Phase2State`).  The outputs equal those of
        ``forward`` on the whole sequence up to the scans' rounding.  The context is capped at
        ``max_seq_len`` (ValueError beyond).  Returns a new state; the one passed in is left
        unchanged.  Runs without gradients; call ``eval()`` first, or dropout applies.
        """
        self.check_layer_cache(cache, Phase2State, "Phase2State")
        input_ids = self.check_step(input_ids, cache)
        b, t = input_ids.shape
        past = 0 if cache is None else cache.length
        positions = torch.arange(past, past + t, device=input_ids.device)  # (T,)
        x = self.embed(input_ids, positions)  # (B, T, d)
        layers = []
        for i, block in enumerate(self.blocks):
            x, states = block.step(x, None if cache is None else cache.layers[i])
            layers.append(states)
        return self.head_input(self.final_norm(x)), Phase2State(layers, past + t, b)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        input_ids = check_token_ids("input_ids", input_ids, self.config.vocab_size, self.config.max_seq_len)
        pos = self.position.lookup(input_ids, positions)  # (S, d) or (B, S, d)
        x = self.token_embedding(input_ids) + pos  # (B, S, d)
        return self.embedding_dropout(x)


def expected_parameter_count(config: Phase2Config) -> int:
    """Closed form of the parameter count (checks the module tree in tests); the position table is a buffer."""
    v, d, n, c, h = config.vocab_size, config.d_model, config.n_layers, config.bk_channels, config.n_heads
    hidden = config.ffn_mult * d
    bias = int(config.mixer_bias)
    h_gamma = 1 if config.hebbian_shared_decay else h
    mixer = {  # potential, gamma, feature LayerNorm, out / q, k, v, gamma, head norm gain, out
        "bk": (1 + int(config.bk_dissipation)) * (d * c + bias * c) + 4 * c * int(config.bk_norm) + (2 * c * d + d),
        "hebbian": 3 * (d * d + bias * d) + (d * h_gamma + bias * h_gamma) + d * int(config.hebbian_norm) + (d * d + d),
    }
    block = sum(2 * d + mixer[m] for m in config.mixers) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    return v * d + n * block + 2 * d + (d * v + v * int(config.head_bias)) + pointer_parameter_count(config)



__all__ = [
    "INITS", "MIXERS", "ORIGINAL", "PRESETS", "BKCore", "DissipativeHebbian", "Phase2Block",
    "Phase2Config", "Phase2Model", "Phase2State", "expected_parameter_count",
]
