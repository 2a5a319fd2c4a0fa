"""The seed report's "simple test" as a function: create, forward, backward, memory.

Each check is measured and compared against a stated threshold; nothing passes
that was not measured.  Memory: on CUDA, ``torch.cuda.memory_allocated`` /
``max_memory_allocated`` around the forward+backward; on CPU, the process's peak
resident set size (``getrusage``), which includes Python and library overhead —
the report says which one it is.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys
import time
from dataclasses import dataclass, field

import torch

from muse._checks import check_float, check_int

SEED_PARAMETER_COUNT = 80_937_553  # vocab 50257, d 512, 6 layers, max_seq_len 1024
SEED_TRAINABLE_COUNT = 80_413_265  # the same, less the frozen 1024 x 512 position table
GRAD_NORM_RANGE = (1e-6, 1e3)  # Stage 1 criterion: every gradient norm inside

#: The seed report's simple test (2025-11-21, the seed's code on one CUDA GPU, batch 2 x 128
#: random tokens; memory from its Test 4 at batch 2 x 1024, in GiB): (label, value) in report order.
SEED_REPORT_LINES = (
    ("Total parameters", "80,937,553"),
    ("Output shape", "(2, 128, 50257)"),
    ("NaN / Inf detected", "False / False"),
    ("Loss", "10.8828"),
    ("Gradient norms", "min=6.766319e-04, max=1.013672e+00"),
    ("Current / Peak VRAM", "0.52 / 1.37 GB (batch 2 x 1024)"),
)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class SmokeResult:
    device: str
    preset: str
    model: str
    parameters: int
    checks: list[Check] = field(default_factory=list)
    measurements: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["passed"] = self.passed
        return d


def _rss_peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def gradient_norms(model: torch.nn.Module) -> dict[str, float]:
    """fp32 L2 norm of each trainable parameter's gradient, tensor by tensor as the seed's test
    lists them: a planar complex parameter (of a ComplexLinear or ComplexEmbedding) counts as
    two tensors, ``<name>.real`` and ``<name>.imag`` (the seed keeps the parts as separate
    parameters).  A parameter without a gradient gives NaN."""
    from muse.nn import ComplexEmbedding, ComplexLinear

    planar = {f"{mod_name}.{name}" if mod_name else name
              for mod_name, module in model.named_modules() if isinstance(module, (ComplexLinear, ComplexEmbedding))
              for name, _ in module.named_parameters(recurse=False)}
    norms = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            norms[name] = float("nan")
        elif name in planar:
            norms[f"{name}.real"] = float(p.grad[0].float().norm())
            norms[f"{name}.imag"] = float(p.grad[1].float().norm())
        else:
            norms[name] = float(p.grad.float().norm())
    return norms


def resolve_device(device: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a usable torch.device; ValueError otherwise."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device is {device!r} but torch.cuda.is_available() is False")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def run_smoke(model_name: str = "stage1", preset: str = "seed", device: str = "auto", batch_size: int = 2,
              seq_len: int = 128, seed: int = 0, max_memory_gb: float = 8.0, compile: bool | None = None,
              compile_backend: str = "inductor") -> SmokeResult:
    """Run the four checks of the seed's simple test and return measured results.

    ``compile`` (None: on for CUDA, off for CPU) runs the model under torch.compile; one
    warm-up forward+backward compiles it first, timed as ``compile_seconds``, so the forward
    and backward timings are run time only.
    """
    from muse.models import build_model
    from muse.models.compile import compile_model, resolve_compile
    from muse.train.loss import lm_loss

    batch_size = check_int("batch_size", batch_size, min_value=1)
    seq_len = check_int("seq_len", seq_len, min_value=1)
    max_memory_gb = check_float("max_memory_gb", max_memory_gb, min_value=0.0, min_inclusive=False)
    dev = resolve_device(device)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    t0 = time.perf_counter()
    model = build_model(model_name, preset, device=dev)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    res = SmokeResult(device=str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
                      preset=preset, model=model_name, parameters=n_params)
    res.measurements["create_seconds"] = time.perf_counter() - t0
    res.measurements["trainable_parameters"] = n_trainable
    res.measurements["config"] = model.config.to_dict()
    if model_name == "stage1" and preset == "seed":
        res.checks.append(Check("parameter count", n_params == SEED_PARAMETER_COUNT,
                                f"{n_params:,} (seed report: {SEED_PARAMETER_COUNT:,})"))
        res.checks.append(Check("trainable parameter count", n_trainable == SEED_TRAINABLE_COUNT,
                                f"{n_trainable:,} (seed code: {SEED_TRAINABLE_COUNT:,})"))
    if seq_len > model.max_seq_len:
        raise ValueError(f"seq_len={seq_len} exceeds the preset's max_seq_len={model.max_seq_len}")
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len + 1), generator=gen).to(dev)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    compiled = resolve_compile(compile, dev)
    res.measurements["compiled"] = compiled
    net = model
    if compiled:
        net = compile_model(model, backend=compile_backend)
        model.train()
        t0 = time.perf_counter()
        lm_loss(net(inputs), targets).backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        res.measurements["compile_seconds"] = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)

    # forward
    model.train()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        mem_before = torch.cuda.memory_allocated(dev)
    t0 = time.perf_counter()
    logits = net(inputs)
    expected = (batch_size, seq_len, vocab)
    n_nan = int(torch.isnan(logits).sum())
    n_inf = int(torch.isinf(logits).sum())
    res.measurements.update(forward_seconds=time.perf_counter() - t0, nan=n_nan, inf=n_inf,
                            logits_shape=list(logits.shape), logits_dtype=str(logits.dtype))
    res.checks.append(Check("forward shape", tuple(logits.shape) == expected,
                            f"{tuple(logits.shape)} (expected {expected})"))
    res.checks.append(Check("forward finite", n_nan == 0 and n_inf == 0, f"NaN: {n_nan}, Inf: {n_inf}"))

    # backward
    loss = lm_loss(logits, targets)
    t0 = time.perf_counter()
    loss.backward()
    loss_value = float(loss.detach())
    res.measurements["backward_seconds"] = time.perf_counter() - t0
    norms = gradient_norms(model)
    lo, hi = GRAD_NORM_RANGE
    outside = {k: v for k, v in norms.items() if not (math.isfinite(v) and lo <= v <= hi)}
    gmin = min(norms.values(), default=float("nan"))
    gmax = max(norms.values(), default=float("nan"))
    res.measurements.update(loss=loss_value, grad_norm_min=gmin, grad_norm_max=gmax,
                            grad_norms_outside=outside, ln_vocab=math.log(vocab))
    res.checks.append(Check("loss finite", math.isfinite(loss_value), f"loss {loss_value:.4f} (ln V = {math.log(vocab):.4f})"))
    res.checks.append(Check(f"gradient norms in [{lo:g}, {hi:g}]", not outside and bool(norms),
                            f"min {gmin:.3e}, max {gmax:.3e}, {len(outside)} of {len(norms)} outside "
                            "(complex parameters as real and imaginary parts)"))

    # memory
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        current = torch.cuda.memory_allocated(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        kind = "torch.cuda.max_memory_allocated (tensors on the GPU, whole run incl. model creation)"
        res.measurements.update(memory_kind=kind, memory_current_bytes=current, memory_peak_bytes=peak,
                                memory_forward_backward_bytes=peak - mem_before)
        memory_line = f"{current / 2**30:.2f} / {peak / 2**30:.2f} GB (batch {batch_size} x {seq_len})"
    else:
        peak = _rss_peak_bytes()
        kind = "process peak RSS from getrusage (includes Python/torch overhead, not just tensors)"
        res.measurements.update(memory_kind=kind, memory_peak_bytes=peak)
        memory_line = f"CPU: peak RSS {peak / 2**30:.2f} GB (not comparable)"
    res.checks.append(Check(f"peak memory < {max_memory_gb:g} GB", peak < max_memory_gb * 1e9,
                            f"{peak / 1e9:.3f} GB ({kind})"))
    res.measurements["seed_report_lines"] = [
        (label, seed, mine) for (label, seed), mine in zip(SEED_REPORT_LINES, (
            f"{n_params:,} (trainable {n_trainable:,})",
            str(tuple(logits.shape)),
            f"{n_nan > 0} / {n_inf > 0}",
            f"{loss_value:.4f}",
            f"min={gmin:.6e}, max={gmax:.6e}",
            memory_line,
        ), strict=True)
    ] if model_name == "stage1" and preset == "seed" else []
    return res


def init_statistics(seed: int, model_name: str = "stage1", preset: str = "seed", device: str = "cpu",
                    batch_size: int = 2, seq_len: int = 128, eval_tokens=None, eval_batch: int = 4,
                    eval_seq: int = 1024, **overrides) -> dict:
    """The seed report's numbers at initialisation for one seed, measured as the seed's test does.

    ``torch.manual_seed(seed)``, build the model, then from the same global generator random
    ids and independent random labels (batch_size, seq_len): in train mode the cross-entropy
    ``loss`` and the :func:`gradient_norms` (their min, its tensor, max); in eval mode on the
    same ids ``uniform_target_loss``, the loss averaged over all vocab_size targets
    (logsumexp minus the mean logit; random-label losses scatter around it).  With
    ``eval_tokens`` (1-D ids) also ``eval_loss``: next-token loss in eval mode over the
    tokens cut into (eval_batch, eval_seq) blocks, whole blocks only.
    """
    import numpy as np
    import torch.nn.functional as F

    from muse.models import build_model

    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = build_model(model_name, preset, device=dev, **overrides)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch_size, seq_len)).to(dev)
    labels = torch.randint(0, vocab, (batch_size, seq_len)).to(dev)
    model.train()
    loss = F.cross_entropy(model(ids).float().reshape(-1, vocab), labels.reshape(-1))
    loss.backward()
    norms = gradient_norms(model)
    smallest = min(norms, key=norms.get)
    out = {"seed": seed, "loss": float(loss.detach()), "grad_norm_min": norms[smallest], "grad_norm_min_tensor": smallest,
           "grad_norm_max": max(norms.values())}
    model.eval()
    with torch.no_grad():
        logits = model(ids).float()
        out["uniform_target_loss"] = float((torch.logsumexp(logits, -1) - logits.mean(-1)).mean())
        if eval_tokens is not None:
            block = eval_batch * eval_seq
            tokens = torch.from_numpy(np.asarray(eval_tokens, dtype=np.int64))
            n_blocks = (tokens.numel() - 1) // block
            if n_blocks < 1:
                raise ValueError(f"eval_tokens must hold more than {block} tokens, got {tokens.numel()}")
            total = 0.0
            for b in range(n_blocks):
                chunk = tokens[b * block: (b + 1) * block + 1].to(dev)
                x = chunk[:-1].reshape(eval_batch, eval_seq)
                y = chunk[1:].reshape(eval_batch, eval_seq)
                total += float(F.cross_entropy(model(x).float().reshape(-1, vocab), y.reshape(-1), reduction="sum"))
            out["eval_loss"] = total / (n_blocks * block)
            out["eval_tokens"] = n_blocks * block
    return out


def format_report(res: SmokeResult) -> str:
    m = res.measurements
    lines = [
        "=" * 64, f"MUSE smoke test: {res.model} / preset {res.preset} on {res.device}", "=" * 64,
        f"parameters: {res.parameters:,} (trainable {m['trainable_parameters']:,})",
        f"timings: create {m['create_seconds']:.2f}s, forward {m['forward_seconds']:.3f}s, "
        f"backward {m['backward_seconds']:.3f}s"
        + (f", compile (warm-up step) {m['compile_seconds']:.1f}s" if m.get("compiled") else ", eager"),
        "",
    ]
    for c in res.checks:
        lines.append(f"[{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
    if m.get("grad_norms_outside"):
        lines.append("gradient norms outside the range:")
        lines += [f"    {k}: {v:.3e}" for k, v in m["grad_norms_outside"].items()]
    if m.get("seed_report_lines"):
        lines += ["", "the seed report's simple test (2025-11-21, seed code, CUDA) | this run:"]
        lines += [f"  {label}: {seed} | {mine}" for label, seed, mine in m["seed_report_lines"]]
    lines += ["", f"Overall: {'PASS' if res.passed else 'FAIL'}"]
    return "\n".join(lines)
