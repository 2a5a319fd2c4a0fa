"""Stage 1 (the seed's "Phase 3 Stage 1"): the seed's complex model.

    ids (B, S) -> ComplexEmbedding -> [Stage1Block] x L -> ComplexLayerNorm
        -> real part -> Linear head -> logits (B, S, vocab)

    Stage1Block: z -> LN1 -> ComplexLinear -> ModReLU -> dropout -> + z -> LN2

No operation mixes positions, so the model is causal by construction (each logit
depends on its own token and position only).  With vocab 50257, d_model 512,
6 layers and max_seq_len 1024 it has 80,937,553 parameters, the frozen position
table included (80,413,265 trainable).  The config's defaults initialise, freeze
and drop out as the seed's code does; ``docs/architecture.md`` lists where MUSE
departs from that code and why.  The seed's names (``Phase3Stage1Config``,
``Phase3Stage1Block``, ``Phase3Stage1Model``, ``create_phase3_stage1_model``) are
kept for seed scripts.

``tie_head`` (variants only) makes the head's weight the real plane of the token table (the head
then reads Re(h) scaled by ``tied_head_scale(d)``, a power of two near d^-1/2)
(:class:`muse.nn.TiedRealHead`): vocab x d_model fewer parameters, the head keeps its bias.
``head="complex"`` makes the head read both planes, Re(W z) + b as a real linear over [Re z, Im z]; with
``token_table="real"`` (one real token table) the parameter count is unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_choice, check_float, check_int, check_probability, check_type
from muse.complex.recompute import gemm_saved
from muse.models.base import LanguageModel, PointerCache, pointer_parameter_count
from muse.nn import (
    ComplexDropout,
    ComplexEmbedding,
    ComplexLayerNorm,
    ComplexLinear,
    ComplexRecurrence,
    ComplexRetention,
    ModReLU,
    RealLinear,
    TiedRealHead,
)
from muse.nn.embedding import EMBEDDING_INITS, EMBEDDING_TABLES
from muse.nn.linear import HEAD_INITS, LINEAR_INITS
from muse.nn.mixers import DECAY_KINDS, LAMBDA_KINDS, OMEGA_INITS, PHASE_INITS
from muse.nn.pointer import MODES as POINTER_MODES


@dataclass
class Stage1Config:
    """The seed's fields (its ``n_seq`` is ``max_seq_len``), two explicit extras and the init choices.

    The defaults are the seed report's model as the seed's code builds it; the
    alternatives ("normal", "shared", trainable positions) are MUSE's earlier choices.
    """

    vocab_size: int = 50257  # GPT-2 BPE
    d_model: int = 512
    n_layers: int = 6
    max_seq_len: int = 1024  # the seed report's 80,937,553-parameter model
    use_complex32: bool = True  # fp16 planes; False = fp32 planar baseline
    dropout: float = 0.1
    zeta_scale: float = 1.0  # amplitude of the zeta position table (and of the "zeta" token tables)
    initial_phase: float | None = None  # optional constant rotation of the embedding
    layer_norm_eps: float = 1e-5
    # False: the position table is a frozen parameter (counted, never updated); True: it learns
    trainable_positions: bool = False
    # token tables: "zeta" = zeta position pattern by token id (imaginary table at half scale);
    # "normal" = each part ~ N(0, 1/2)
    embedding_init: str = "zeta"
    # ComplexLinear weights: "uniform" = U(-s, s) per part, s = sqrt(2/(in+out)); "normal" = N(0, 1/(in+out))
    linear_init: str = "uniform"
    # LM head: "default" = nn.Linear's U(-1/sqrt(d), 1/sqrt(d)) for weight and bias; "normal" = N(0, 0.02), bias 0
    head_init: str = "default"
    # dropout masks: "independent" = separate masks for the real and imaginary parts; "shared" = one per entry
    dropout_mode: str = "independent"
    # Variants (the seed is mixer "none", ffn "none"); see Stage1MixBlock.
    # "none" | "recurrence" (ComplexRecurrence) | "retention" (ComplexRetention) | "hybrid" (recurrence in
    # even layers, retention in odd ones); muse.nn.mixers
    mixer: str = "none"
    ffn: str = "none"  # "none" (the seed's ComplexLinear d->d + modReLU) | "complex" (d->d_ffn->d)
    d_ffn: int | None = None  # hidden width of the complex FFN; None: 2 * d_model
    d_state: int | None = None  # recurrence state channels; None: d_model
    r_min: float = 0.9  # |lambda| init ring (LRU; Griffin uses [0.9, 0.999])
    r_max: float = 0.999
    omega_init: str = "zeta"  # "zeta" | "uniform": phases of lambda
    lambda_kind: str = "complex"  # "complex" | "real" (omega fixed at 0, not trained): the real-lambda ablation
    conv_kernel: int = 0  # width of the recurrence's causal input convolution; 0 = none
    decay: str = "static"  # "static" | "input" (per-token decay from the input, Griffin's RG-LRU; with a complex
    # lambda the same power turns the state, Mamba-3's data-dependent rotation) | "drive" (the rate from the drive)
    decay_scale: float = 8.0  # c in a_t = lambda^(c sigmoid(.)) for decay "input"/"drive" (Griffin's 8)
    decay_rank: int = 0  # decay "input": 0 = a full d -> d_state projection, r > 0 = low-rank through r
    gate: bool = False  # the mixers' complex output gate, modReLU(G x)
    n_heads: int = 8  # retention heads
    d_key: int | None = None  # retention's complex query/key width (all heads); None: d_model // 2
    phase_init: str = "geometric"  # retention's key phases: "geometric" (RoPE's) | "zeta" | "none"
    # variants only: the head's weight IS the real plane of the token table (weight tying, own bias)
    tie_head: bool = False
    pointer_dim: int = 0  # key width of the learned copy path (muse.nn.PointerMixture); 0 = none
    pointer_mode: str = "cache"  # its mixture: "cache" (a gate of h) | "sentinel" (the head competes with the positions)
    # what the head reads: "real" (the seed's Linear over Re z) | "complex" (Re(W z) + b, i.e. a real linear over
    # [Re z, Im z], 2d -> vocab: the final state's imaginary plane reaches the logits; docs/experiments.md section 26)
    head: str = "real"
    token_table: str = "complex"  # "complex" (the seed's real + imaginary tables) | "real" (tokens on the real axis)

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
        check_type("trainable_positions", self.trainable_positions, bool, "a bool")
        check_choice("embedding_init", self.embedding_init, EMBEDDING_INITS)
        check_choice("linear_init", self.linear_init, LINEAR_INITS)
        check_choice("head_init", self.head_init, HEAD_INITS)
        check_choice("dropout_mode", self.dropout_mode, C.DROPOUT_MODES)
        check_int("pointer_dim", self.pointer_dim, min_value=0)
        check_choice("pointer_mode", self.pointer_mode, POINTER_MODES)
        check_choice("head", self.head, HEADS)
        check_choice("token_table", self.token_table, EMBEDDING_TABLES)
        _check_variant_fields(self)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.use_complex32 else torch.float32

    @property
    def head_width(self) -> int:
        """Features the head reads a token: d, or 2d for the complex head."""
        return 2 * self.d_model if self.head == "complex" else self.d_model

    @property
    def mixes_tokens(self) -> bool:
        """Only a mixer or the copy path mixes positions; the seed's block sees one token and position at a time."""
        return self.mixer != "none" or self.pointer_dim > 0

    @property
    def is_seed_block(self) -> bool:
        """True for the seed's block (no mixer, no FFN)."""
        return self.mixer == "none" and self.ffn == "none"

    def unused_fields(self) -> dict[str, str]:
        """The variant fields the block this config selects never reads, each with what would read it
        (``make_config`` refuses an override of one: ``decay`` on the seed block would otherwise build the
        seed block silently)."""
        unused = {}
        if self.mixer not in ("recurrence", "hybrid"):
            unused |= dict.fromkeys(RECURRENCE_FIELDS, "mixer='recurrence' or 'hybrid'")
        if self.mixer not in ("retention", "hybrid"):
            unused |= dict.fromkeys(RETENTION_FIELDS, "mixer='retention' or 'hybrid'")
        if self.mixer == "none":
            unused["gate"] = "a mixer"
        if self.ffn != "complex":
            unused["d_ffn"] = "ffn='complex'"
        return unused

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The fields only the recurrence reads, and only retention.
RECURRENCE_FIELDS = frozenset({"d_state", "r_min", "r_max", "omega_init", "lambda_kind", "conv_kernel", "decay",
                               "decay_scale", "decay_rank"})
RETENTION_FIELDS = frozenset({"n_heads", "d_key", "phase_init"})

# The variant presets' fields (the sizes apart).
_MIX = dict(mixer="recurrence", ffn="complex", d_ffn=1024, r_min=0.0, r_max=0.99, embedding_init="normal", gate=True,
            lambda_kind="real", zeta_scale=0.1, decay="input")

# The seed's presets set sizes only: they initialise, freeze and drop out as the config's defaults say
# (the seed's code), so what the tiny model shows on CPU holds for the seed model.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layers=2, max_seq_len=128),  # CPU / CI
    "small": dict(d_model=256, n_layers=4, max_seq_len=512),
    "seed": dict(d_model=512, n_layers=6, max_seq_len=1024),  # the seed report's model
    # The seed's size with a token mixer and an FFN: d_ffn = 2d gives a complex FFN the real
    # parameter count of a GPT's d -> 4d -> d MLP (8 d^2).  The recurrence's ring [0, 0.99], normal
    # token tables and the output gate are the best of the sweep in docs/experiments.md (section 4);
    # a real lambda beat the complex one in three seeds of three at this size and at tiny size
    # (section 7; `--model-arg lambda_kind=complex --model-arg decay=static` restores the complex decay).  The zeta position
    # table at a tenth of its amplitude lets the token (RMS 0.7 per part) dominate (a quarter: 12 % lower
    # test PPL at this size, 7 % at tiny size, section 8; a tenth: 0.9 % lower again, three seeds, section 9).
    # The mixer is the recurrence: ComplexRetention ("retention", "hybrid") scored worse (section 9).
    # Its decay is per token, from a low-rank projection of the input of rank d/16 (Griffin's RG-LRU rate,
    # Mamba's dt rank): 3-5 % lower test PPL than the constant decay at the budget, and within the VRAM
    # criterion, which the full-rank projection is not (section 11).
    "mix": dict(d_model=512, n_layers=6, max_seq_len=1024, **_MIX, decay_rank=32),
    "mix-tiny": dict(d_model=64, n_layers=2, max_seq_len=128, **{**_MIX, "d_ffn": 128}, decay_rank=4),
    # `mix` with the learned copy path over its window (muse.nn.PointerMixture, keys of width d/8) in its
    # sentinel form: test PPL 243.46 against `mix`'s 654.77 at the budget (three seeds, section 18); Phase 2 with
    # the same copy path gets 238.32, so the gain is the copy path's, not the block's.  The cache form scores
    # 1.9 % lower (238.91, section 15) but fails the gradient criterion: with no repeated token in the window
    # its copy scores get no gradient at all; the sentinel form passes every criterion (section 18).
    "mix-copy": dict(d_model=512, n_layers=6, max_seq_len=1024, **_MIX, decay_rank=32, pointer_dim=64,
                     pointer_mode="sentinel"),
    "mix-copy-tiny": dict(d_model=64, n_layers=2, max_seq_len=128, **{**_MIX, "d_ffn": 128}, decay_rank=4,
                          pointer_dim=8, pointer_mode="sentinel"),
}

MIXERS = ("none", "recurrence", "retention", "hybrid")
HEADS = ("real", "complex")
FFNS = ("none", "complex")


def _d_key(config: Stage1Config) -> int:
    """Retention's complex query/key width over all heads."""
    return config.d_key if config.d_key is not None else max(config.d_model // 2, config.n_heads)


def mixer_kind(config: Stage1Config, layer: int) -> str:
    """The mixer of block ``layer``: "hybrid" alternates recurrence (even layers) and retention (odd)."""
    if config.mixer == "hybrid":
        return "recurrence" if layer % 2 == 0 else "retention"
    return config.mixer


def _check_variant_fields(config: Stage1Config) -> None:
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
    check_choice("lambda_kind", config.lambda_kind, LAMBDA_KINDS)
    check_int("conv_kernel", config.conv_kernel, min_value=0)
    check_choice("decay", config.decay, DECAY_KINDS)
    check_float("decay_scale", config.decay_scale, min_value=0.0, min_inclusive=False)
    check_int("decay_rank", config.decay_rank, min_value=0)
    check_type("gate", config.gate, bool, "a bool")
    check_int("n_heads", config.n_heads, min_value=1)
    if config.d_key is not None:
        check_int("d_key", config.d_key, min_value=1)
    check_choice("phase_init", config.phase_init, PHASE_INITS)
    if config.mixer in ("retention", "hybrid"):
        for name, width in (("d_model", config.d_model), ("d_key", _d_key(config))):
            if width % config.n_heads:
                raise ValueError(f"{name} ({width}) must be divisible by n_heads ({config.n_heads}) "
                                 f"for mixer {config.mixer!r}")
    check_type("tie_head", config.tie_head, bool, "a bool")
    if config.tie_head and config.is_seed_block:
        raise ValueError("tie_head=True needs a variant block (mixer or ffn other than 'none'); "
                         "the seed block keeps the seed's untied head")
    if config.tie_head and config.head != "real":
        raise ValueError(f"tie_head=True ties the real token table to a head that reads Re z: it needs head='real', "
                         f"got head={config.head!r}")


def _hooked(modules: list[nn.Module]) -> bool:
    """Whether a forward or backward hook, global or on one of ``modules``, is registered."""
    from torch.nn.modules import module as m

    if m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks \
            or m._global_backward_pre_hooks:
        return True
    return any(x._forward_hooks or x._forward_pre_hooks or x._backward_hooks or x._backward_pre_hooks
               for x in modules)


class Stage1Block(nn.Module):
    """LN -> ComplexLinear -> ModReLU -> dropout -> residual -> LN (init and dropout as the config's)."""

    def __init__(self, d_model: int, dropout: float = 0.1, eps: float = 1e-5,
                 dtype: torch.dtype = torch.float16, device=None, *, linear_init: str = "uniform",
                 dropout_mode: str = "independent"):
        super().__init__()
        self.norm1 = ComplexLayerNorm(d_model, eps, dtype=dtype, device=device)
        self.linear = ComplexLinear(d_model, d_model, dtype=dtype, device=device, init=linear_init)
        self.activation = ModReLU(d_model, dtype=dtype, device=device)
        self.dropout = ComplexDropout(dropout, mode=dropout_mode)
        self.norm2 = ComplexLayerNorm(d_model, eps, dtype=dtype, device=device)

    def forward(self, z: C.ComplexTensor, stats: dict | None = None) -> C.ComplexTensor:
        """``stats`` (the model's diagnostics dict for this block) gets no entries from this block."""
        return self.norm2(self.branch(self.norm1(z)), residual=z)

    def branch(self, n: C.ComplexTensor) -> C.ComplexTensor:
        """The residual branch after norm1: linear, modReLU, dropout."""
        return self.dropout(self.activation(self.linear(n)))

    def step(self, z: C.ComplexTensor, state: None = None) -> tuple[C.ComplexTensor, None]:
        """Incremental form: the block is per-token, so it carries no state."""
        return self(z), None

    def initial_state(self, batch_size: int) -> None:
        """The state :meth:`step` starts from: none."""
        return None


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

    The mixer (:func:`mixer_kind`) is the only part that mixes positions, causally: a
    :class:`ComplexRecurrence` (a diagonal state) or a :class:`ComplexRetention` (a content-addressed
    matrix state).  ``ffn "complex"``: :class:`ComplexFeedForward`; ``ffn "none"`` keeps the seed's
    per-token map (ComplexLinear d -> d + modReLU), so every variant has a nonlinearity.  The
    model's final LayerNorm closes the pre-norm stack.
    """

    def __init__(self, config: Stage1Config, dtype: torch.dtype = torch.float16, device=None, layer: int = 0):
        super().__init__()
        d, eps = config.d_model, config.layer_norm_eps
        self.mixer = None
        kind = mixer_kind(config, layer)
        if kind != "none":
            self.mixer_norm = ComplexLayerNorm(d, eps, dtype=dtype, device=device)
        if kind == "retention":
            self.mixer = ComplexRetention(d, config.n_heads, _d_key(config), config.phase_init, gate=config.gate,
                                          dtype=dtype, device=device)
        elif kind == "recurrence":
            self.mixer = ComplexRecurrence(d, config.d_state, config.r_min, config.r_max, config.omega_init,
                                           dtype=dtype, device=device, lambda_kind=config.lambda_kind,
                                           conv_kernel=config.conv_kernel, gate=config.gate, decay=config.decay,
                                           decay_scale=config.decay_scale, decay_rank=config.decay_rank)
        self.ffn_norm = ComplexLayerNorm(d, eps, dtype=dtype, device=device)
        if config.ffn == "complex":
            self.ffn = ComplexFeedForward(d, config.d_ffn or 2 * d, dtype=dtype, device=device)
        else:
            self.ffn = SeedChannelMap(d, dtype=dtype, device=device)
        self.dropout = ComplexDropout(config.dropout, mode=config.dropout_mode)

    def forward(self, z: C.ComplexTensor, stats: dict | None = None) -> C.ComplexTensor:
        """``stats`` (the model's diagnostics dict for this block) gets no entries from this block."""
        if self.mixer is not None:
            z = C.add(z, self.dropout(C.ComplexTensor(gemm_saved(self._mixer_branch, z.planes))))
        return C.add(z, self.dropout(C.ComplexTensor(gemm_saved(self._ffn_branch, z.planes))))

    def _mixer_branch(self, planes: torch.Tensor) -> torch.Tensor:
        """mixer(mixer_norm(z)) on z's planes (a region that :func:`muse.complex.recompute.gemm_saved` may checkpoint)."""
        return self.mixer(self.mixer_norm(C.ComplexTensor(planes))).planes

    def _ffn_branch(self, planes: torch.Tensor) -> torch.Tensor:
        """ffn(ffn_norm(z)) on z's planes (a region that :func:`muse.complex.recompute.gemm_saved` may checkpoint)."""
        return self.ffn(self.ffn_norm(C.ComplexTensor(planes))).planes

    def step(self, z: C.ComplexTensor, state: C.ComplexTensor | None = None
             ) -> tuple[C.ComplexTensor, C.ComplexTensor | None]:
        """Incremental form: z (B, T, d) after the tokens that left the recurrence in ``state``
        (None = the start) -> (output, the recurrence's state after z; None without a mixer)."""
        if self.mixer is not None:
            y, state = self.mixer.forward_with_state(self.mixer_norm(z), initial_state=state)
            z = C.add(z, self.dropout(y))
        return C.add(z, self.dropout(self.ffn(self.ffn_norm(z)))), state

    def initial_state(self, batch_size: int) -> C.ComplexTensor | None:
        """A zero recurrence state (batch_size, d_state) in the state dtype; None without a mixer."""
        return None if self.mixer is None else self.mixer.initial_state(batch_size)


def _block(config: Stage1Config, dtype: torch.dtype, device, layer: int) -> nn.Module:
    """The seed's block for the seed configuration, a pre-norm Stage1MixBlock for the variants."""
    if config.is_seed_block:
        return Stage1Block(config.d_model, config.dropout, config.layer_norm_eps, dtype, device,
                           linear_init=config.linear_init, dropout_mode=config.dropout_mode)
    return Stage1MixBlock(config, dtype, device, layer)


@dataclass
class Stage1State:
    """Decoding state of :meth:`Stage1Model.step`: the tokens seen so far (``length``) and each
    layer's recurrence state ((B, d_state) ComplexTensor in float32; None for a layer without one)."""

    layers: list[C.ComplexTensor | None]
    length: int  # the next token sits at this position
    batch_size: int


@dataclass
class Stage1DecodeState:
    """Static decoding buffers of :meth:`Stage1Model.decode_step`, updated in place each token:
    each layer's recurrence state (as in :class:`Stage1State`) and ``position``, a (1,) int64
    tensor on the model's device holding where the next token sits; with a pointer, the window's
    unit keys (B, max_seq_len, d_key) and ids (B, max_seq_len), written at ``position``."""

    layers: list[C.ComplexTensor | None]
    position: torch.Tensor
    batch_size: int
    pointer_keys: torch.Tensor | None = None
    pointer_ids: torch.Tensor | None = None


class Stage1Model(LanguageModel):
    """The Stage 1 language model; ``forward`` returns logits (B, S, vocab) in the storage dtype.

    ``vocab_size``, ``d_model``, ``n_layers``, ``use_complex32`` (and ``max_seq_len``) read the
    config, as the seed's model attributes of those names do.
    """

    config_cls = Stage1Config

    def __init__(self, config: Stage1Config | None = None, device=None, **overrides):
        super().__init__(config, device, **overrides)
        config = self.config
        dt = config.dtype
        self.embedding = ComplexEmbedding(config.vocab_size, config.d_model, config.max_seq_len,
                                          config.dropout, config.zeta_scale, config.initial_phase,
                                          dtype=dt, device=device, trainable_positions=config.trainable_positions,
                                          init=config.embedding_init, dropout_mode=config.dropout_mode,
                                          table=config.token_table)
        self.blocks = nn.ModuleList(_block(config, dt, device, i) for i in range(config.n_layers))
        self.final_norm = ComplexLayerNorm(config.d_model, config.layer_norm_eps, dtype=dt, device=device)
        if config.tie_head:
            self.lm_head = TiedRealHead(self.embedding, init=config.head_init)
        else:
            self.lm_head = RealLinear(config.head_width, config.vocab_size, dtype=dt, device=device,
                                      init=config.head_init)
        self.build_pointer(device)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def n_layers(self) -> int:
        return self.config.n_layers

    @property
    def use_complex32(self) -> bool:
        return self.config.use_complex32

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None) -> C.ComplexTensor:
        return self.embedding(input_ids, positions)  # (B, S, d) complex

    def trunk(self, x: C.ComplexTensor, diag: dict | None = None) -> C.ComplexTensor:
        """The seed blocks' chain with each block's norm2 paired with the next norm1 (the last with the final
        norm): the same values as block after block, and in inference one pass per pair, so no block's output
        is read back (:meth:`ComplexLayerNorm.pair`).  Block after block for other blocks, with ``diag``, and
        while a module hook would miss the calls the pairs skip (the blocks', their norms', the final norm's)."""
        if (diag is not None or not all(type(b) is Stage1Block for b in self.blocks)
                or _hooked([*self.blocks, *(b.norm1 for b in self.blocks), *(b.norm2 for b in self.blocks),
                            self.final_norm])):
            return super().trunk(x, diag)
        if not len(self.blocks):
            self._count_nonfinite(0, x)
            return self.final_norm(x)
        # slot 0 the first activations (counted by the first norm's pass), slot i + 1 block i's output (by its pair)
        flags = torch.zeros(len(self.blocks) + 1, dtype=torch.int32, device=x.device)
        n = self.blocks[0].norm1(x, nonfinite_input=(flags, 0))
        for i, block in enumerate(self.blocks):
            then = self.blocks[i + 1].norm1 if i + 1 < len(self.blocks) else self.final_norm
            x, n = block.norm2.pair(block.branch(n), x, then, nonfinite=(flags, i + 1))
        self._count_nonfinite_flags(0, flags)
        return n

    def head_input(self, z: C.ComplexTensor) -> torch.Tensor:
        """Re(z) (B, S, d) in the storage dtype; with a tied head times :func:`tied_head_scale` (exact:
        a power of two), so the logits start near unit scale whatever the token table's init; with the
        complex head [Re z, Im z] (B, S, 2d)."""
        if self.config.head == "complex":
            return torch.cat((z.real, z.imag), -1)
        if self.config.tie_head:
            return z.real * tied_head_scale(self.config.d_model)
        return z.real

    @torch.no_grad()
    def step_hidden(self, input_ids: torch.Tensor, cache: Stage1State | None = None
                    ) -> tuple[torch.Tensor, Stage1State]:
        """Incremental decoding (:meth:`LanguageModel.step` adds the head): the head input (B, T, d)
        of ``input_ids`` (B, T) placed after ``cache``.

        O(1) work per token: the seed's block is per-token (a new token needs only itself at its
        position), and the recurrence carries its (B, d_state) state per layer.  The outputs equal
        those of ``forward`` on the whole sequence up to rounding.  The context is capped at
        ``max_seq_len`` (the position table's rows; ValueError beyond).  Returns a new state; the
        one passed in is left unchanged.  Runs without gradients; call ``eval()`` first.
        """
        self.check_layer_cache(cache, Stage1State, "Stage1State")
        input_ids = self.check_step(input_ids, cache)
        b, t = input_ids.shape
        past = 0 if cache is None else cache.length
        positions = torch.arange(past, past + t, device=input_ids.device)  # (T,)
        h, layers = self._advance(input_ids, positions, [None] * len(self.blocks) if cache is None
                                  else cache.layers)
        return h, Stage1State(layers, past + t, b)

    def _advance(self, input_ids: torch.Tensor, positions: torch.Tensor, layers: list
                 ) -> tuple[torch.Tensor, list]:
        """The body of :meth:`step_hidden` and :meth:`decode_step`: ids (B, T) at ``positions`` (T,) after
        the per-layer ``layers`` states -> (the head input (B, T, d), the states after the ids)."""
        z = self.embed(input_ids, positions)
        new = []
        for block, state in zip(self.blocks, layers, strict=True):
            z, state = block.step(z, state)
            new.append(state)
        return self.head_input(self.final_norm(z)), new

    def decode_buffers(self, batch_size: int, cache: Stage1State | PointerCache | None = None) -> Stage1DecodeState:
        """Buffers for :meth:`decode_step`: a copy of ``cache`` (the state :meth:`step` left after
        the prompt; a :class:`PointerCache` for a model with a pointer), or with None zero states at
        position 0; on the model's device."""
        batch_size = check_int("batch_size", batch_size, min_value=1)
        window = None
        if self.pointer is not None and cache is not None:
            check_type("cache", cache, PointerCache, "a PointerCache or None (the model has a pointer)")
            window, cache = cache, cache.inner
        if cache is not None:
            check_type("cache", cache, Stage1State, "a Stage1State or None")
            if cache.batch_size != batch_size or len(cache.layers) != len(self.blocks):
                raise ValueError(f"cache holds batch size {cache.batch_size} and {len(cache.layers)} layers, "
                                 f"expected {batch_size} and {len(self.blocks)}")
        device = self.lm_head.weight.device
        layers = []
        for i, block in enumerate(self.blocks):
            state = block.initial_state(batch_size)
            if state is not None and cache is not None:
                state.planes.copy_(cache.layers[i].planes)
            layers.append(state)
        past = 0 if cache is None else cache.length
        state = Stage1DecodeState(layers, torch.full((1,), past, dtype=torch.long, device=device), batch_size)
        if self.pointer is not None:
            d_key = self.pointer.query.out_features
            state.pointer_keys = torch.zeros(batch_size, self.max_seq_len, d_key, device=device)
            state.pointer_ids = torch.zeros(batch_size, self.max_seq_len, dtype=torch.long, device=device)
            if window is not None:
                state.pointer_keys[:, :past] = window.keys
                state.pointer_ids[:, :past] = window.ids
        return state

    @torch.no_grad()
    def decode_step(self, input_ids: torch.Tensor, state: Stage1DecodeState) -> torch.Tensor:
        """One token per row, static form: logits (B, vocab) of ``input_ids`` (B, 1) int64 placed
        at ``state.position``; updates ``state`` in place (new recurrence states, position + 1).

        The same computation as :meth:`step` (one shared body, the same logits), with no host sync,
        no Python value that changes per token and no allocation that depends on the position, so
        it can be compiled once and captured in a CUDA graph (``muse.train.generate``).  An id or
        position out of range is a ValueError in eager mode and a device-side assert inside a
        compiled graph or a CUDA graph capture: keep the context within ``max_seq_len``.
        """
        check_type("state", state, Stage1DecodeState, "a Stage1DecodeState (from decode_buffers)")
        if len(state.layers) != len(self.blocks):
            raise ValueError(f"state has {len(state.layers)} layers, the model {len(self.blocks)}")
        check_type("input_ids", input_ids, torch.Tensor, "a torch.Tensor")
        if input_ids.dtype != torch.long:
            raise TypeError(f"input_ids must be an int64 tensor, got {input_ids.dtype}")
        if tuple(input_ids.shape) != (state.batch_size, 1):
            raise ValueError(f"input_ids must have shape ({state.batch_size}, 1) (the state's batch size, one "
                             f"token), got {tuple(input_ids.shape)}")
        if input_ids.device != state.position.device:
            raise ValueError(f"input_ids is on {input_ids.device} but the state on {state.position.device}")
        h, new = self._advance(input_ids, state.position, state.layers)
        for buffer, value in zip(state.layers, new, strict=True):
            if buffer is not None:
                buffer.planes.copy_(value.planes)
        logits = self.lm_head(h)
        if self.pointer is not None:
            q, k, theta, gate = self.pointer.project(h)
            state.pointer_keys.index_copy_(1, state.position, k)
            state.pointer_ids.index_copy_(1, state.position, input_ids)
            logits = self.pointer.mix(q, state.pointer_keys, theta, gate, state.pointer_ids, logits,
                                      state.position)
        state.position.add_(1)
        return logits[:, -1]


def tied_head_scale(d_model: int) -> float:
    """2^-floor(log2(d) / 2), about d^-1/2 (T5's scale before a tied head): unit-variance Re(h)
    against a token table of O(1) entries gives logits of O(1), not O(sqrt d) (std ~12 at d = 512,
    N(0, 1/2) tables, unscaled)."""
    return 2.0 ** -(int(math.log2(d_model)) // 2)


def Phase3Stage1Config(vocab_size: int, d_model: int = 512, n_layers: int = 6, n_seq: int = 2048,  # noqa: N802
                       use_complex32: bool = True, dropout: float = 0.1, zeta_scale: float = 1.0,
                       **fields) -> Stage1Config:
    """The seed's config constructor: the same arguments, positional or keyword, and defaults.

    ``n_seq`` is the seed's name for ``max_seq_len``; ``fields`` are further
    :class:`Stage1Config` fields.  Returns a :class:`Stage1Config`, so the result works
    everywhere one does (registry, trainer, checkpoints, equality).
    """
    if "max_seq_len" in fields:
        raise TypeError("Phase3Stage1Config takes the seed's n_seq, not max_seq_len "
                        "(Stage1Config takes max_seq_len)")
    check_int("n_seq", n_seq, min_value=1)
    return Stage1Config(vocab_size, d_model, n_layers, n_seq, use_complex32, dropout, zeta_scale, **fields)


def create_phase3_stage1_model(vocab_size: int = 50257, d_model: int = 512, n_layers: int = 6,
                               max_seq_len: int = 2048, use_complex32: bool = True, dropout: float = 0.1,
                               zeta_scale: float = 1.0, device=None, **extra) -> Stage1Model:
    """The seed's factory: its arguments and defaults (max_seq_len 2048), plus ``device`` and
    further :class:`Stage1Config` fields.  The seed report's model used max_seq_len=1024."""
    config = Stage1Config(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers,
                          max_seq_len=max_seq_len, use_complex32=use_complex32, dropout=dropout,
                          zeta_scale=zeta_scale, **extra)
    return Stage1Model(config, device=device)


Phase3Stage1Block = Stage1Block
Phase3Stage1Model = Stage1Model


def expected_parameter_count(config: Stage1Config) -> int:
    """Closed form of the parameter count (checks the module tree in tests)."""
    v, d, n, s = config.vocab_size, config.d_model, config.n_layers, config.max_seq_len
    embedding = (2 if config.token_table == "complex" else 1) * v * d + s * d
    blocks = n * (2 * (2 * d) + (2 * d * d + 2 * d) + d)  # two LNs, complex linear + bias, modReLU bias
    if not config.is_seed_block:
        blocks = sum(_variant_block_parameter_count(config, i) for i in range(n))
    head = v if config.tie_head else config.head_width * v + v  # a tied head's weight is the embedding's real table
    return embedding + blocks + 2 * d + head + pointer_parameter_count(config)


def expected_trainable_count(config: Stage1Config) -> int:
    """The parameters that train: all but a frozen position table."""
    frozen = 0 if config.trainable_positions else config.max_seq_len * config.d_model
    return expected_parameter_count(config) - frozen


def _variant_block_parameter_count(config: Stage1Config, layer: int) -> int:
    d = config.d_model
    count = 2 * d  # the FFN's LayerNorm
    kind = mixer_kind(config, layer)
    if kind == "retention":
        width = 2 * _d_key(config) + d + (d if config.gate else 0) + config.n_heads  # q, k, v, G, decay
        count += 2 * d + (2 * d * width + 2 * width) + 2 * d * d + d  # LayerNorm, proj + bias, out, norm gain
        count += d if config.gate else 0  # the gate's modReLU bias
    if kind == "recurrence":
        n = config.d_state or d
        phases = n if config.lambda_kind == "complex" else 0  # a real lambda's omega = 0 is a buffer
        count += 2 * d + 2 * (2 * d * n) + d + n + phases  # LayerNorm, B and C (no bias), D, nu, omega
        count += 2 * config.conv_kernel * n  # the complex convolution weights
        if config.gate:
            count += (2 * d * n + 2 * n) + n  # G + bias, the gate's modReLU bias
        r = config.decay_rank
        if config.decay == "input":
            count += (2 * d * r + r * n + n) if r else (2 * d * n + 2 * n)  # A (low-rank: A1, A2 + bias) + bias
        if config.decay == "drive":
            count += 3 * n  # w (complex) and b per channel
    if config.ffn == "complex":
        m = config.d_ffn or 2 * d
        count += (2 * d * m + 2 * m) + m + (2 * m * d + 2 * d)  # up + bias, modReLU bias, down + bias
    else:
        count += (2 * d * d + 2 * d) + d  # the seed's linear + bias, modReLU bias
    return count


__all__ = [
    "FFNS", "HEADS", "MIXERS", "PRESETS", "ComplexFeedForward", "Phase3Stage1Block", "SeedChannelMap", "Stage1MixBlock", "Phase3Stage1Config", "Phase3Stage1Model", "Stage1Block",
    "Stage1Config", "Stage1DecodeState", "Stage1Model", "Stage1State", "create_phase3_stage1_model", "expected_parameter_count",
    "mixer_kind",
    "expected_trainable_count",
]
