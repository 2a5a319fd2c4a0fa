"""The training configuration: one dataclass, printed at start, saved in checkpoints and results."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from muse._checks import check_choice, check_float, check_int, check_type
from muse.models.compile import GRAPH_MODES, check_memory_budget, check_mode
from muse.train.distributed import BACKENDS as DIST_BACKENDS
from muse.train.scaler import check_power_of_two

SPLITS = ("train", "valid", "test")
DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = (None, "bf16", "fp16")
OPTIMIZERS = ("adamw", "muon")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
# Fields that decide the loss curve: a resumed run must use the same values.
TRAJECTORY_FIELDS = (
    "model", "preset", "model_overrides", "seq_len", "batch_size", "grad_accum", "lr", "min_lr",
    "warmup", "optimizer", "muon_rms", "weight_decay", "decay_embeddings", "label_smoothing", "betas", "eps", "clip", "tokens", "max_steps",
    "seed", "amp",
    "train_split", "init_scale", "growth_interval",
)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data arrays."""

    model: str = "stage1"
    preset: str = "tiny"
    model_overrides: dict = field(default_factory=dict)  # config fields, e.g. {"dropout": 0.0}
    seq_len: int | None = None  # None: the model's max_seq_len
    batch_size: int = 8  # sequences per rank per micro-batch
    grad_accum: int = 1  # micro-batches per step; global batch = batch_size*grad_accum*world_size
    lr: float = 6e-4
    min_lr: float = 6e-5  # cosine floor
    warmup: int = 100  # steps of linear warmup
    optimizer: str = "adamw"  # "muon": Muon for the hidden linear weights, AdamW for the rest (muse.train.muon)
    muon_rms: float = 0.2  # Muon's step: its RMS per real entry at unit lr (0.2: AdamW's typical update)
    weight_decay: float = 0.1  # linear-layer weights only (see muse.train.optim)
    decay_embeddings: bool = False  # also decay the embedding tables (nanoGPT's rule)
    label_smoothing: float = 0.0  # the training loss's eps (evaluation always scores the plain cross-entropy)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    clip: float = 1.0  # global grad-norm clip on fp32 grads; 0 disables
    tokens: int | None = None  # token budget (-> steps); None with max_steps None: one epoch
    max_steps: int | None = None
    stop_after: int | None = None  # stop early (checkpoint saved) without changing the schedule
    eval_every: int = 200  # steps; 0 disables periodic evaluation
    eval_tokens: int | None = 65536  # bound of periodic evals (None: whole eval split)
    final_eval_tokens: int | None = None  # None: the whole eval split
    eval_batch_size: int | None = None  # None: batch_size
    eval_stride: int | None = None  # sliding-window stride of the final eval (None: seq_len)
    log_every: int = 10
    ckpt_every: int | None = None  # None: at every periodic eval; 0: only at the end
    save_best: bool = False  # also keep best.safetensors (lowest periodic eval loss)
    train_split: str = "train"
    eval_split: str = "test"
    data_dir: str | None = None
    tokenizer_dir: str | None = None
    cache_dir: str | None = None
    tokens_npy: str | None = None  # pre-tokenised uint16 .npy of the training text
    eval_tokens_npy: str | None = None
    offline: bool = False  # never contact the Hugging Face hub
    out: str | None = None  # None: runs/<model>-<preset>-<timestamp>
    resume: str | None = None
    seed: int = 1337
    device: str = "auto"
    amp: str | None = None  # Phase 2 on CUDA: bf16 or fp16 autocast
    compile: bool | None = None  # torch.compile the model; None: on for CUDA, off for CPU
    compile_backend: str = "inductor"  # aot_eager/eager: quick compile checks on CPU
    compile_mode: str | None = None  # muse.models.compile.MODES; None: CUDA graphs in one CUDA process (resolve_compile_mode)
    compile_memory_budget: float | None = None  # the partitioner's activation memory budget (None: torch's 1.0)
    dist_backend: str = "auto"  # under torchrun: auto = NCCL on CUDA, gloo on CPU; gloo on CUDA lets ranks share a GPU
    keep_logits: bool = False  # the loss keeps its chunks' logits for backward: faster, the full logits' memory
    progress: bool = True
    init_scale: float = 2.0**16  # Stage 1 dynamic loss scale
    growth_interval: int = 1000  # clean steps before the loss scale doubles
    max_skip_fraction: float = 0.05  # fail when skipped > skip_grace + fraction * steps
    skip_grace: int = 10  # overflows tolerated while the scale calibrates at the start

    def __post_init__(self):
        check_type("model", self.model, str, "a model name")
        check_type("preset", self.preset, str, "a preset name")
        check_type("model_overrides", self.model_overrides, dict, "a dict")
        _opt_int("seq_len", self.seq_len, 1)
        check_int("batch_size", self.batch_size, min_value=1)
        check_int("grad_accum", self.grad_accum, min_value=1)
        check_float("lr", self.lr, min_value=0.0, min_inclusive=False)
        check_float("min_lr", self.min_lr, min_value=0.0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        check_int("warmup", self.warmup, min_value=0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("muon_rms", self.muon_rms, min_value=0.0, min_inclusive=False)
        check_float("weight_decay", self.weight_decay, min_value=0.0)
        check_type("decay_embeddings", self.decay_embeddings, bool, "a bool")
        self.label_smoothing = check_float("label_smoothing", self.label_smoothing, min_value=0.0, max_value=1.0,
                                           max_inclusive=False)
        check_type("betas", self.betas, (tuple, list), "a pair of floats")
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two entries, got {len(self.betas)}")
        self.betas = tuple(check_float(f"betas[{i}]", b, min_value=0.0, max_value=1.0, max_inclusive=False)
                           for i, b in enumerate(self.betas))
        check_float("eps", self.eps, min_value=0.0, min_inclusive=False)
        check_float("clip", self.clip, min_value=0.0)
        _opt_int("tokens", self.tokens, 1)
        _opt_int("max_steps", self.max_steps, 1)
        if self.tokens is not None and self.max_steps is not None:
            raise ValueError("give tokens or max_steps, not both")
        _opt_int("stop_after", self.stop_after, 1)
        check_int("eval_every", self.eval_every, min_value=0)
        _opt_int("eval_tokens", self.eval_tokens, 1)
        _opt_int("final_eval_tokens", self.final_eval_tokens, 1)
        _opt_int("eval_batch_size", self.eval_batch_size, 1)
        _opt_int("eval_stride", self.eval_stride, 1)
        check_int("log_every", self.log_every, min_value=1)
        _opt_int("ckpt_every", self.ckpt_every, 0)
        check_type("save_best", self.save_best, bool, "a bool")
        if self.save_best and self.eval_every == 0:
            raise ValueError("save_best keeps the checkpoint with the best periodic eval, but eval_every=0 "
                             "turns periodic evals off; set eval_every > 0 or drop save_best")
        for name in ("train_split", "eval_split"):
            if getattr(self, name) not in SPLITS:
                raise ValueError(f"{name} must be one of {SPLITS}, got {getattr(self, name)!r}")
        for name in ("data_dir", "tokenizer_dir", "cache_dir", "tokens_npy", "eval_tokens_npy", "out", "resume"):
            if getattr(self, name) is not None:
                check_type(name, getattr(self, name), str, "a path string or None")
        check_type("offline", self.offline, bool, "a bool")
        check_int("seed", self.seed, min_value=0)
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.compile is not None:
            check_type("compile", self.compile, bool, "a bool or None")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"compile_backend must be one of {COMPILE_BACKENDS}, got {self.compile_backend!r}")
        check_mode(self.compile_mode, "compile_mode")
        if self.compile_mode in GRAPH_MODES and self.compile_backend != "inductor":
            raise ValueError(f"compile_mode={self.compile_mode!r} needs compile_backend='inductor', "
                             f"got {self.compile_backend!r}")
        if self.compile_memory_budget is not None:
            check_memory_budget(self.compile_memory_budget, "compile_memory_budget")
            if self.compile is False or self.compile_backend != "inductor":
                raise ValueError(f"compile_memory_budget={self.compile_memory_budget} is read by inductor's partitioner: "
                                 "it needs compile (not False) with compile_backend='inductor', got "
                                 f"compile={self.compile}, compile_backend={self.compile_backend!r}")
        if self.dist_backend not in DIST_BACKENDS:
            raise ValueError(f"dist_backend must be one of {DIST_BACKENDS}, got {self.dist_backend!r}")
        check_type("progress", self.progress, bool, "a bool")
        check_type("keep_logits", self.keep_logits, bool, "a bool")
        check_power_of_two("init_scale", check_float("init_scale", self.init_scale, min_value=2.0**-24,
                                                      max_value=2.0**24))
        check_int("growth_interval", self.growth_interval, min_value=1)
        check_float("max_skip_fraction", self.max_skip_fraction, min_value=0.0, max_value=1.0)
        check_int("skip_grace", self.skip_grace, min_value=0)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config field(s) {unknown}")
        return cls(**data)


def _opt_int(name: str, value: object, min_value: int) -> None:
    if value is not None:
        check_int(name, value, min_value=min_value)
