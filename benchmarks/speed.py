"""Speed in one process: the device's ceilings, each op, each model, eager vs compiled vs kernels.

1. Ceilings: device-to-device copy (GB/s, bytes read + written) and a large GEMM (TFLOP/s; fp16
   on CUDA, fp32 on CPU).
2. Ops at the model's activation size (B*S rows of d): layer_norm and modrelu forward and
   forward+backward (GB/s of the fewest bytes they must move, % of the copy ceiling), and the
   complex linear vs one real GEMM of its block size (2d x 2d).
3. Models at B x S: inference and forward+backward tokens/s for eager, eager + kernels,
   compiled and compiled + kernels; compile time apart from run time; achieved GEMM FLOP/s as
   % of the GEMM ceiling.  Rows: Stage 1, Phase 2, the GPT reference (registry name "gpt";
   ``not_measured`` when it is not registered) and ``complex64``, a plain-PyTorch native
   complex64 twin of Stage 1 (what users of complex-NN libraries run).

Timing: CUDA uses ``triton.testing.do_bench`` (median, CUDA events) when Triton is present,
else CUDA events; CPU uses ``time.perf_counter`` (median of ``cpu_repeats``).  Inputs rotate
over enough buffers to exceed the L2 cache.  Writes ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import gc
import math
import statistics
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import muse.complex as C
from muse import kernels
from muse._checks import check_int, check_type
from muse._io import write_report_json
from muse.models.compile import compile_model, resolve_compile

VARIANTS = ("eager", "kernels", "compiled", "compiled+kernels", "compiled+cudagraphs", "compiled+kernels+cudagraphs",
            "compiled+traced-loss", "compiled+kernels+cudagraphs+traced-loss", "compiled+kernels+autotune",
            "compiled+kernels+autotune+traced-loss", "compiled+kernels+cudagraphs+keep-logits",
            "compiled+kernels+cudagraphs+half-weights", "compiled+kernels+cudagraphs+keep-logits+half-weights")
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
MODEL_ROWS = ("stage1", "complex64", "gpt", "phase2")


@dataclass
class SpeedConfig:
    preset: str = "seed"
    batch_size: int = 4
    seq_len: int | None = None  # None: the preset's max_seq_len
    device: str = "auto"
    models: tuple[str, ...] = MODEL_ROWS
    variants: tuple[str, ...] = VARIANTS
    model_overrides: dict = dataclasses.field(default_factory=dict)  # e.g. {"vocab_size": 512} for CPU
    stage1_overrides: dict = dataclasses.field(default_factory=dict)  # Stage 1's row only, e.g. {"lambda_kind": "complex"}
    compile_backend: str = "inductor"
    cpu_repeats: int = 3
    copy_mib: int | None = None  # None: 1024 on CUDA, 64 on CPU
    gemm_size: int | None = None  # None: 8192 on CUDA, 512 on CPU
    seed: int = 0
    out: str | None = None
    ops: bool = True  # False: models only (no op rows)
    amp: str | None = None  # autocast on CUDA for the fp32 models other than the GPT (which always runs bf16)

    def __post_init__(self):
        check_type("preset", self.preset, str, "a preset name")
        check_int("batch_size", self.batch_size, min_value=1)
        if self.seq_len is not None:
            check_int("seq_len", self.seq_len, min_value=1)
        check_int("cpu_repeats", self.cpu_repeats, min_value=1)
        check_type("ops", self.ops, bool, "a bool")
        if self.amp is not None and self.amp not in AMP:
            raise ValueError(f"amp must be one of {sorted(AMP)} or None, got {self.amp!r}")
        self.models, self.variants = tuple(self.models), tuple(self.variants)
        bad = sorted(set(self.models) - set(MODEL_ROWS)) + sorted(set(self.variants) - set(VARIANTS))
        if bad:
            raise ValueError(f"unknown models/variants {bad}; models: {MODEL_ROWS}, variants: {VARIANTS}")


# ------------------------------------------------------------------ timing
class Timer:
    """Median seconds of ``fn()`` on one device, warm-up excluded."""

    def __init__(self, device: torch.device, cpu_repeats: int = 3):
        self.device, self.cpu_repeats = device, cpu_repeats
        self.method = "time.perf_counter median"
        if device.type == "cuda":
            self.method = "triton.testing.do_bench median" if kernels.HAS_TRITON else "CUDA events median"

    def __call__(self, fn) -> float:
        if self.device.type == "cuda":
            if kernels.HAS_TRITON:
                from triton.testing import do_bench

                return do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
            fn()
            torch.cuda.synchronize(self.device)
            times = []
            for _ in range(20):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end) / 1e3)
            return statistics.median(times)
        fn()
        times = []
        for _ in range(self.cpu_repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rotation(make, device: torch.device, nbytes_each: int) -> list:
    """Enough input sets that one pass over them exceeds the L2 cache (CUDA); one set on CPU."""
    if device.type != "cuda":
        return [make()]
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 64 << 20) or (64 << 20)
    return [make() for _ in range(max(2, math.ceil(2 * l2 / max(nbytes_each, 1))))]


def _cycle(sets: list, fn):
    state = {"i": 0}

    def call():
        args = sets[state["i"] % len(sets)]
        state["i"] += 1
        return fn(*args)

    return call


# ---------------------------------------------------------------- ceilings
def ceilings(cfg: SpeedConfig, device: torch.device, timer: Timer) -> dict:
    mib = cfg.copy_mib or (1024 if device.type == "cuda" else 64)
    src = torch.randn(mib << 18, device=device)  # mib MiB of fp32
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    n = cfg.gemm_size or (8192 if device.type == "cuda" else 512)
    dt = torch.float16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    tg = timer(lambda: a @ b)
    return {"copy_GBps": 2 * (mib << 20) / t / 1e9, "copy_bytes": 2 * (mib << 20),
            "gemm_TFLOPs": 2 * n**3 / tg / 1e12, "gemm_size": n, "gemm_dtype": str(dt).replace("torch.", "")}


# ---------------------------------------------------------------------- ops
def _compile_mode(variant: str) -> str | None:
    """The variant's torch.compile mode: "max-autotune" (``autotune``: CUDA graphs and inductor's GEMM
    autotuning), "reduce-overhead" (``cudagraphs``) or None."""
    return "max-autotune" if "autotune" in variant else "reduce-overhead" if "cudagraphs" in variant else None


def _impl_env(variant: str):
    """The variant's switches: MUSE_KERNELS, and MUSE_LOSS_OPAQUE=0 for ``traced-loss`` (the compiler traces
    the loss's chunk loops, as before they became custom ops: faster for some models, holds every chunk's
    logits; the other variants run the default opaque loss)."""
    return kernels.environment(MUSE_KERNELS="1" if "kernels" in variant else "0",
                               MUSE_LOSS_OPAQUE="0" if "traced-loss" in variant else None)


def op_rows(cfg: SpeedConfig, device: torch.device, timer: Timer, rows: int, d: int, ceil: dict,
            variants: tuple[str, ...]) -> list[dict]:
    """layer_norm / modrelu fwd and fwd+bwd per variant, timed as CUDA graphs (:func:`graph_seconds`: GPU work,
    no host dispatch) against the copy ceiling and a copy of the same bytes timed the same way; complex linear
    vs one real GEMM (:func:`complex_linear_rows`)."""
    dt = torch.float16  # the storage the models use and the kernels cover
    gen = torch.Generator().manual_seed(cfg.seed)
    w = torch.ones(d, dtype=dt, device=device, requires_grad=True)
    bvec = torch.zeros(d, dtype=dt, device=device, requires_grad=True)
    nbytes = 2 * rows * d * torch.tensor([], dtype=dt).element_size()  # one planar tensor

    def planes(grad=False):
        return torch.randn(2, rows, d, generator=gen).to(device, dt).requires_grad_(grad)

    def ln(p):
        return C.layer_norm(C.ComplexTensor(p), w, bvec).planes

    def mr(p):
        return C.modrelu(C.ComplexTensor(p), bvec).planes

    src = _rotation(lambda: (planes(), planes()), device, 2 * nbytes)
    t_copy = graph_seconds(timer, lambda a, b: b.copy_(a), src, device)  # the same bytes as the op's forward
    del src
    copy_same = 2 * nbytes / t_copy / 1e9
    out = []
    for name, fn, params in (("layer_norm", ln, (w, bvec)), ("modrelu", mr, (bvec,))):
        for variant in (v for v in variants if _compile_mode(v) is None and "traced-loss" not in v):  # ops: CUDA graphs anyway, no loss
            row = {"op": name, "variant": variant, "rows": rows, "d": d, "dtype": str(dt).replace("torch.", ""),
                   "timing": "CUDA graph of the calls over the rotation, per call" if device.type == "cuda"
                   else "per call", "copy_same_bytes_GBps": copy_same}
            if "kernels" in variant and not kernels.use_kernel(w):
                out.append({**row, "status": "not_measured", "reason": "kernels are off here (see muse.kernels)"})
                continue
            if variant.startswith("compiled"):
                torch._dynamo.reset()  # dynamo caches by code object and the switch is read when it traces
            f = compile_model_fn(fn, cfg) if variant.startswith("compiled") else fn
            with _impl_env(variant):
                fwd_sets = _rotation(lambda: (planes(),), device, nbytes)
                with torch.no_grad():
                    t_f = graph_seconds(timer, f, fwd_sets, device)
                bwd_sets = _rotation(lambda: (planes(True), planes()), device, 2 * nbytes)
                t_b = graph_seconds(timer, lambda p, g, f=f, ps=params: torch.autograd.grad(f(p), (p, *ps), g),
                                    bwd_sets, device)
            # fewest bytes: fwd reads z, writes y; fwd+bwd also reads z and dy again, writes dz
            f_gbps, b_gbps = 2 * nbytes / t_f / 1e9, 5 * nbytes / t_b / 1e9
            out.append({**row, "status": "measured", "fwd_s": t_f, "fwd_bwd_s": t_b,
                        "fwd_GBps": f_gbps, "fwd_bwd_GBps": b_gbps,
                        "fwd_pct_copy": 100 * f_gbps / ceil["copy_GBps"],
                        "fwd_bwd_pct_copy": 100 * b_gbps / ceil["copy_GBps"],
                        "fwd_pct_copy_same": 100 * f_gbps / copy_same,
                        "fwd_bwd_pct_copy_same": 100 * b_gbps / copy_same})
            del fwd_sets, bwd_sets
    return out + complex_linear_rows(cfg, device, timer, rows, d, variants)


def graph_seconds(timer: Timer, fn, sets: list, device: torch.device) -> float:
    """Seconds per ``fn(*args)``, the host out of the timing: on CUDA one CUDA graph of ``fn`` over every
    input set (rotated beyond L2), replayed under ``timer`` and divided by the number of calls (warmed up
    first on a side stream, so autotuning and lazy initialisation stay outside the capture); elsewhere
    ``timer`` over the rotation."""
    if device.type != "cuda":
        return timer(_cycle(sets, fn))
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            for args in sets:
                fn(*args)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for args in sets:
            fn(*args)
    return timer(graph.replay) / len(sets)


def complex_linear_rows(cfg: SpeedConfig, device: torch.device, timer: Timer, rows: int, d: int,
                        variants: tuple[str, ...]) -> list[dict]:
    """Complex linear (rows x d -> d, with bias) fwd and fwd+bwd per variant (eager: the PyTorch block GEMM;
    kernels: muse.kernels.complex_mm) against one real GEMM of the block size (rows x 2d x 2d) and a real
    linear's fwd+bwd (three such GEMMs), all timed as CUDA graphs (:func:`graph_seconds`).  Like for like
    too: the complex linear without bias against the real one without, and with bias against the real
    linear with a bias (whose gradient is one more reduction over the rows on both sides)."""
    dt = torch.float16
    gen = torch.Generator().manual_seed(cfg.seed)
    wc = (torch.randn(2, d, d, generator=gen) / math.sqrt(d)).to(device, dt).requires_grad_(True)
    bc = torch.zeros(2, d, dtype=dt, device=device, requires_grad=True)
    nbytes = 2 * rows * d * 2  # one planar fp16 activation

    def planes(grad=False):
        return torch.randn(2, rows, d, generator=gen).to(device, dt).requires_grad_(grad)

    def lin(p):
        return C.linear(C.ComplexTensor(p), C.ComplexTensor(wc), C.ComplexTensor(bc)).planes

    def real(grad=False):
        return torch.randn(rows, 2 * d, generator=gen).to(device, dt).requires_grad_(grad)

    def lin_nobias(p):
        return C.linear(C.ComplexTensor(p), C.ComplexTensor(wc)).planes

    wr = torch.randn(2 * d, 2 * d, generator=gen).to(device, dt).requires_grad_(True)
    br = torch.zeros(2 * d, dtype=dt, device=device, requires_grad=True)
    with torch.no_grad():
        t_r = graph_seconds(timer, lambda x: F.linear(x, wr), _rotation(lambda: (real(),), device, nbytes), device)
    t_rb = graph_seconds(timer, lambda x, g: torch.autograd.grad(F.linear(x, wr), (x, wr), g),
                         _rotation(lambda: (real(True), real()), device, 2 * nbytes), device)
    t_rbb = graph_seconds(timer, lambda x, g: torch.autograd.grad(F.linear(x, wr, br), (x, wr, br), g),
                          _rotation(lambda: (real(True), real()), device, 2 * nbytes), device)
    flops = 2 * rows * (2 * d) ** 2
    out = []
    for variant in ("eager", "kernels", "compiled", "compiled+kernels"):
        if variant != "eager" and variant not in variants:
            continue
        row = {"op": "complex_linear", "variant": variant, "rows": rows, "d": d, "real_gemm_s": t_r,
               "real_fwd_bwd_s": t_rb, "real_fwd_bwd_bias_s": t_rbb, "timing": "CUDA graph of the calls over the rotation, per call"
               if device.type == "cuda" else "per call"}
        if "kernels" in variant and not kernels.use_kernel(bc):
            out.append({**row, "status": "not_measured", "reason": "kernels are off here (see muse.kernels)"})
            continue
        if variant.startswith("compiled"):
            torch._dynamo.reset()  # dynamo caches by code object and the switch is read when it traces
        f = compile_model_fn(lin, cfg) if variant.startswith("compiled") else lin
        f_nb = compile_model_fn(lin_nobias, cfg) if variant.startswith("compiled") else lin_nobias
        try:
            with _impl_env(variant):
                with torch.no_grad():
                    t_c = graph_seconds(timer, f, _rotation(lambda: (planes(),), device, nbytes), device)
                t_cb = graph_seconds(timer, lambda p, g, f=f: torch.autograd.grad(f(p), (p, wc, bc), g),
                                     _rotation(lambda: (planes(True), planes()), device, 2 * nbytes), device)
                t_cbn = graph_seconds(timer, lambda p, g, f=f_nb: torch.autograd.grad(f(p), (p, wc), g),
                                      _rotation(lambda: (planes(True), planes()), device, 2 * nbytes), device)
        except Exception as exc:  # a failed variant is reported, the others still run
            out.append({**row, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        out.append({**row, "status": "measured", "fwd_s": t_c, "fwd_bwd_s": t_cb,
                    "pct_of_real_gemm": 100 * t_r / t_c, "pct_of_real_fwd_bwd": 100 * t_rb / t_cb,
                    "fwd_bwd_nobias_s": t_cbn, "pct_like_for_like_nobias": 100 * t_rb / t_cbn,
                    "pct_like_for_like_bias": 100 * t_rbb / t_cb,
                    "TFLOPs": flops / t_c / 1e12, "fwd_bwd_TFLOPs": 3 * flops / t_cb / 1e12})
    return out


def time_complex_linear(rows: int = 4096, d: int = 512, device: str = "cuda",
                        variants: tuple[str, ...] = ("eager", "kernels")) -> str:
    """Only the complex-linear rows (no ceilings, no models), as markdown: the quick check of issue 11."""
    from muse.train.distributed import resolve_device

    cfg = SpeedConfig(device=device, variants=variants)
    dev = resolve_device(device)
    lines = [f"timing: {Timer(dev).method} of a CUDA graph of the calls, per call" if dev.type == "cuda"
             else f"timing: {Timer(dev).method}"]
    for r in complex_linear_rows(cfg, dev, Timer(dev), rows, d, tuple(variants)):
        lines.append(_complex_linear_line(r))
    return "\n".join(lines)


def time_ops(rows: int = 4096, d: int = 512, device: str = "cuda",
             variants: tuple[str, ...] = ("eager", "kernels", "compiled", "compiled+kernels")) -> str:
    """The op rows alone (layer_norm, modrelu, complex linear) at ``rows`` x ``d``, as markdown lines."""
    from muse.train.distributed import resolve_device

    cfg = SpeedConfig(device=device, variants=variants)
    dev = resolve_device(device)
    timer = Timer(dev)
    ceil = ceilings(cfg, dev, timer)
    lines = [f"rows {rows}, d {d}; copy ceiling {ceil['copy_GBps']:,.1f} GB/s; timing {timer.method}"]
    for r in op_rows(cfg, dev, timer, rows, d, ceil, tuple(variants)):
        if r["op"] == "complex_linear":
            lines.append(_complex_linear_line(r))
        elif r["status"] != "measured":
            lines.append(f"{r['op']} {r['variant']}: {r['status']}: {r.get('reason', '')}")
        else:
            lines.append(f"{r['op']} {r['variant']}: fwd {r['fwd_s'] * 1e6:,.1f} µs {r['fwd_GBps']:,.0f} GB/s "
                         f"({r['fwd_pct_copy']:.0f} % copy, {r['fwd_pct_copy_same']:.0f} % same-size copy "
                         f"{r['copy_same_bytes_GBps']:,.0f} GB/s); fwd+bwd {r['fwd_bwd_s'] * 1e6:,.1f} µs "
                         f"{r['fwd_bwd_GBps']:,.0f} GB/s ({r['fwd_bwd_pct_copy']:.0f} %, "
                         f"{r['fwd_bwd_pct_copy_same']:.0f} %)")
    return "\n".join(lines)


def fused_rows(rows: int = 4096, d: int = 512, device: str = "cuda",
               variants: tuple[str, ...] = ("eager", "kernels"), seed: int = 0) -> list[dict]:
    """The seed block's inference fusion, forward without grad, against its separate ops, per variant
    (``kernels``: the fused kernel against the separate kernels; ``eager``: both are the PyTorch ops): the residual
    inside the LayerNorm, ``layer_norm(h, residual=z)`` against ``layer_norm(add(h, z))``; CUDA graphs of the calls
    over a rotation of inputs as for the op rows.  (modReLU in the complex GEMM's epilogue was timed here too and
    removed: 0.78 µs slower than the GEMM and the modReLU kernel, docs/performance.md, twenty-third session.)"""
    from muse.train.distributed import resolve_device

    dev = resolve_device(device)
    timer, dt = Timer(dev), torch.float16
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dev, dt)

    w, b = rand(d, scale=0.1) + 1, rand(d, scale=0.1)
    nbytes = 2 * rows * d * 2
    cases = {
        "add_layer_norm": (lambda h, z: C.layer_norm(C.ComplexTensor(h), w, b, residual=C.ComplexTensor(z)).planes,
                           lambda h, z: C.layer_norm(C.add(C.ComplexTensor(h), C.ComplexTensor(z)), w, b).planes, 2),
    }
    out = []
    for name, (fused, separate, n_in) in cases.items():
        for variant in variants:
            row = {"op": name, "variant": variant, "rows": rows, "d": d}
            if "kernels" in variant and not kernels.use_kernel(w):
                out.append({**row, "status": "not_measured", "reason": "kernels are off here (see muse.kernels)"})
                continue
            sets = _rotation(lambda n=n_in: tuple(rand(2, rows, d) for _ in range(n)), dev, n_in * nbytes)
            with _impl_env(variant), torch.no_grad():
                t_f = graph_seconds(timer, fused, sets, dev)
                t_s = graph_seconds(timer, separate, sets, dev)
            out.append({**row, "status": "measured", "fused_s": t_f, "separate_s": t_s, "saved_s": t_s - t_f})
            del sets
    return out


def time_fused(rows: int = 4096, d: int = 512, device: str = "cuda",
               variants: tuple[str, ...] = ("eager", "kernels")) -> str:
    """:func:`fused_rows` as markdown lines."""
    lines = []
    for r in fused_rows(rows, d, device, variants):
        head = f"{r['op']} {r['variant']} ({r['rows']} x {r['d']})"
        lines.append(f"{head}: {r['status']}: {r.get('reason', '')}" if r["status"] != "measured" else
                     f"{head}: fused {r['fused_s'] * 1e6:,.2f} µs, separate {r['separate_s'] * 1e6:,.2f} µs, "
                     f"saved {r['saved_s'] * 1e6:,.2f} µs a call")
    return "\n".join(lines)


def _complex_linear_line(r: dict) -> str:
    head = f"Complex linear, {r['variant']} ({r['rows']} x {r['d']} -> {r['d']})"
    if r["status"] != "measured":
        return f"{head}: {r['status']}: {r.get('reason', '')}"
    return (f"{head}: fwd {r['fwd_s'] * 1e6:,.1f} µs, {r['TFLOPs']:.4g} TFLOP/s, {r['pct_of_real_gemm']:.0f} % of one "
            f"real {r['rows']} x {2 * r['d']} x {2 * r['d']} GEMM ({r['real_gemm_s'] * 1e6:,.1f} µs); fwd+bwd "
            f"{r['fwd_bwd_s'] * 1e6:,.1f} µs, {r['pct_of_real_fwd_bwd']:.0f} % of that real linear's fwd+bwd "
            f"({r['real_fwd_bwd_s'] * 1e6:,.1f} µs); like for like: without bias {r['fwd_bwd_nobias_s'] * 1e6:,.1f} µs, "
            f"{r['pct_like_for_like_nobias']:.0f} % of the real linear's, with bias {r['pct_like_for_like_bias']:.0f} % "
            f"of the real linear with bias ({r['real_fwd_bwd_bias_s'] * 1e6:,.1f} µs).")


def compile_model_fn(fn, cfg: SpeedConfig):
    C.set_gemm_policy()
    return torch.compile(fn, backend=cfg.compile_backend, fullgraph=True)


# --------------------------------------------------------- complex64 twin
class Complex64Stage1(nn.Module):
    """Stage 1 in native complex64 (plain PyTorch): embedding + positions -> [LN -> linear ->
    modReLU -> + z -> LN] x L -> LN -> real part -> linear head."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, max_seq_len: int, device=None):
        super().__init__()
        cf = dict(dtype=torch.complex64, device=device)
        self.config = types.SimpleNamespace(vocab_size=vocab_size, max_seq_len=max_seq_len)
        self.embed = nn.Parameter(torch.randn(vocab_size, d_model, **cf))
        self.pos = nn.Parameter(torch.randn(max_seq_len, d_model, device=device) * 0.02)
        self.w = nn.ParameterList(nn.Parameter(torch.randn(d_model, d_model, **cf) / math.sqrt(2 * d_model))
                                  for _ in range(n_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(d_model, **cf)) for _ in range(n_layers))
        self.act_bias = nn.ParameterList(nn.Parameter(torch.zeros(d_model, device=device)) for _ in range(n_layers))
        self.lm_head = nn.Linear(d_model, vocab_size, device=device)

    @staticmethod
    def _ln(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        c = z - z.mean(-1, keepdim=True)
        return c * torch.rsqrt((c.real**2 + c.imag**2).mean(-1, keepdim=True) + eps)

    def forward(self, ids: torch.Tensor, return_hidden: bool = False) -> torch.Tensor:
        """Logits (B, S, V), or with ``return_hidden`` the head's (B, S, d) float32 input."""
        z = self.embed[ids] + self.pos[: ids.shape[1]]
        for w, b, ab in zip(self.w, self.b, self.act_bias, strict=True):
            h = self._ln(z) @ w.T + b
            r = h.abs()
            h = torch.where(r + ab > 0, h * ((r + ab) / r.clamp_min(1e-30)), torch.zeros_like(h))
            z = self._ln(h + z)
        hidden = self._ln(z).real
        return hidden if return_hidden else self.lm_head(hidden)


def gemm_flops_per_token(model: nn.Module) -> int:
    """Forward GEMM FLOPs per token: 2 x the real multiply-adds of every linear map (a complex
    d x d map is one real 2d x 2d GEMM); attention's S-dependent products are not counted."""
    from muse.nn import ComplexLinear, TiedRealHead

    total = 0
    for m in model.modules():
        if isinstance(m, ComplexLinear):
            total += 2 * (2 * m.in_features) * (2 * m.out_features)
        elif isinstance(m, nn.Linear | TiedRealHead):
            total += 2 * m.in_features * m.out_features
        elif isinstance(m, Complex64Stage1):
            total += sum(2 * 4 * w.shape[0] * w.shape[1] for w in m.w)
    return total


def build(name: str, cfg: SpeedConfig, device: torch.device) -> nn.Module:
    from muse.models.registry import MODELS, make_config

    if name == "complex64":
        s1 = make_config("stage1", cfg.preset, **cfg.model_overrides)
        return Complex64Stage1(s1.vocab_size, s1.d_model, s1.n_layers, s1.max_seq_len, device)
    if name not in MODELS:
        raise LookupError(f"model {name!r} is not in the registry ({sorted(MODELS)})")
    spec = MODELS[name]
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    overrides = {k: v for k, v in cfg.model_overrides.items() if k in fields}
    if name == "stage1":
        overrides.update(cfg.stage1_overrides)
    return spec.model_cls(make_config(name, cfg.preset, **overrides), device=device)


def model_rows(cfg: SpeedConfig, device: torch.device, timer: Timer, ceil: dict) -> list[dict]:
    from muse.train.loss import compile_model_loss, loss_path, model_loss

    out = []
    for name in cfg.models:
        try:
            model = build(name, cfg, device)
        except LookupError as exc:
            out += [{"model": name, "variant": v, "status": "not_measured", "reason": str(exc)} for v in cfg.variants]
            continue
        seq = cfg.seq_len or model.config.max_seq_len
        gen = torch.Generator().manual_seed(cfg.seed)
        ids = torch.randint(0, model.config.vocab_size, (cfg.batch_size, seq + 1), generator=gen).to(device)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        fp32 = all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point())
        amp = "bf16" if name == "gpt" else cfg.amp
        autocast = device.type == "cuda" and fp32 and amp is not None
        flops = gemm_flops_per_token(model)
        tokens = cfg.batch_size * seq
        for variant in cfg.variants:
            half = "half-weights" in variant
            row = {"model": name, "variant": variant, "batch": cfg.batch_size, "seq": seq,
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "autocast": amp if autocast and not half else None,
                   "weights": str(AMP[amp]).replace("torch.", "") if half and amp else None,
                   "loss_path": loss_path(AMP[amp] if half and amp else model.lm_head.weight.dtype,
                                          autocast=autocast and not half)}
            if half and not (fp32 and amp is not None):
                out.append({**row, "status": "not_measured",
                            "reason": "half-weights: only for fp32 models run in a 16-bit autocast dtype (the GPT; "
                                      "others with --amp); this model's weights are already what it computes in"})
                continue
            mode = _compile_mode(variant)
            if mode is not None and (device.type != "cuda" or cfg.compile_backend != "inductor"):
                out.append({**row, "status": "not_measured", "reason": f"mode {mode!r} (CUDA graphs) needs CUDA and inductor"})
                continue
            # every model's training step runs the loss's chunk-body kernels; Stage 1 and Phase 2 also
            # their own (complex GEMM, element-wise ops, scans). Variants without "kernels" turn all off.
            if "kernels" in variant and not kernels.enabled(inputs):
                out.append({**row, "status": "not_measured", "reason": "kernels are off here (see muse.kernels)"})
                continue
            torch._dynamo.reset()
            compiled = variant.startswith("compiled")
            # half-weights: a copy whose floating weights are in the autocast dtype, run without autocast (how a
            # 16-bit model is served: no per-call casts of fp32 weights); its fwd+bwd runs the 16-bit chunked loss
            # and leaves 16-bit gradients, as Stage 1's does (fp32 master weights are the optimizer's, not timed)
            served = copy.deepcopy(model).to(AMP[amp]) if half else model
            net = compile_model(served, backend=cfg.compile_backend, fullgraph=True, mode=mode) if compiled else served
            # compiled: the model and the chunked loss as one graph (as muse train runs it)
            # keep-logits: the loss keeps its chunks' logits for backward (the full logits' memory, no recomputation)
            keep = "keep-logits" in variant
            loss_fn = (compile_model_loss(served, backend=cfg.compile_backend, mode=mode, keep_logits=keep) if compiled
                       else functools.partial(model_loss, served, keep_logits=keep))
            ctx = (lambda amp=amp: torch.autocast("cuda", dtype=AMP[amp])) if autocast and not half else _null

            def infer(net=net, ctx=ctx, mode=mode):
                if mode is not None:  # a new CUDA-graph step: earlier outputs may be overwritten
                    torch.compiler.cudagraph_mark_step_begin()
                with torch.no_grad(), ctx():
                    return net(inputs)  # noqa: B023 - inputs is fixed for the whole model loop

            def train_step(loss_fn=loss_fn, ctx=ctx, mode=mode, model=served):
                # as an optimizer step would: gradients are not accumulated (under CUDA graphs
                # the previous step's gradients are replay outputs that the next replay overwrites)
                model.zero_grad(set_to_none=True)
                if mode is not None:
                    torch.compiler.cudagraph_mark_step_begin()
                with ctx():
                    loss = loss_fn(inputs, targets)  # noqa: B023 - the training loss path
                loss.backward()

            try:
                with _impl_env(variant):
                    served.eval()
                    first_i = _first_call(infer, device)
                    t_i = timer(infer)
                    served.train()
                    first_t = _first_call(train_step, device)
                    t_t = timer(train_step)
                    served.zero_grad(set_to_none=True)
            except Exception as exc:  # a variant that fails is reported, the others still run
                out.append({**row, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]})
                continue
            out.append({**row, "status": "measured", "compiled": compiled, "compile_mode": mode,
                        "infer_tok_s": tokens / t_i, "train_tok_s": tokens / t_t,
                        "infer_s": t_i, "train_s": t_t,
                        "compile_s": (max(first_i - t_i, 0) + max(first_t - t_t, 0)) if compiled else None,
                        "gemm_flops_per_token": flops,
                        "infer_pct_gemm": 100 * flops * tokens / t_i / 1e12 / ceil["gemm_TFLOPs"],
                        "train_pct_gemm": 100 * 3 * flops * tokens / t_t / 1e12 / ceil["gemm_TFLOPs"]})
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _first_call(fn, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ runner
def run_speed_benchmark(cfg: SpeedConfig, command: str = "") -> dict:
    from muse.train.distributed import resolve_device
    from muse.train.runlog import environment

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    timer = Timer(device, cfg.cpu_repeats)
    variants = tuple(v for v in cfg.variants if not (v.startswith("compiled") and not _can_compile(cfg, device)))
    ceil = ceilings(cfg, device, timer)
    from muse.models.registry import make_config

    s1 = make_config("stage1", cfg.preset, **{**cfg.model_overrides, **cfg.stage1_overrides})
    rows = cfg.batch_size * (cfg.seq_len or s1.max_seq_len)
    report = {
        "benchmark": "speed", "command": command, "environment": environment(device),
        "triton": _triton_version(), "kernels_enabled_on_device": kernels.enabled(torch.empty(0, device=device)),
        "timing": timer.method, "config": dataclasses.asdict(cfg), "ceilings": ceil,
        "ops": op_rows(cfg, device, timer, rows, s1.d_model, ceil, variants) if cfg.ops else [],
        "models": model_rows(dataclasses.replace(cfg, variants=variants), device, timer, ceil),
        "skipped_variants": sorted(set(cfg.variants) - set(variants)),
    }
    report["versus_gpt"] = {m: versus(report["models"], m, "gpt") for m in ("stage1", "phase2", "complex64")
                            if m in cfg.models and "gpt" in cfg.models}
    # the like-for-like reference: the GPT run from 16-bit weights, as the 16-bit models run (thirty-first session)
    report["gpt_half_weights_measured"] = any(r["model"] == "gpt" and r["status"] == "measured"
                                              and "half-weights" in r["variant"] for r in report["models"])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.out) if cfg.out else Path("runs") / f"bench-speed-{cfg.preset}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    report = write_report_json(out / "report.json", report)
    (out / "report.md").write_text(format_markdown(report), encoding="utf-8")
    report["out"] = str(out)
    return report


def versus(rows: list[dict], model: str, reference: str) -> dict:
    """``model``'s tokens/s over ``reference``'s, inference and fwd+bwd, each model at its fastest
    measured variant of ``rows`` (issue 11 compares Stage 1 with the GPT this way: neither side's
    slower rows count). A ratio is None where either model has no measured row."""
    out = {}
    for key, name in (("infer_tok_s", "inference"), ("train_tok_s", "fwd_bwd")):
        best = {}
        for m in (model, reference):
            measured = [r for r in rows if r["model"] == m and r["status"] == "measured" and r[key] is not None]
            best[m] = max(measured, key=lambda r: r[key]) if measured else None
        a, b = best[model], best[reference]
        out[name] = {"ratio": a[key] / b[key] if a and b else None,
                     f"{model}_variant": a["variant"] if a else None, f"{reference}_variant": b["variant"] if b else None,
                     f"{model}_tok_s": a[key] if a else None, f"{reference}_tok_s": b[key] if b else None}
    return out


def _can_compile(cfg: SpeedConfig, device: torch.device) -> bool:
    """Compiled variants run where --compile would be on by default, or with a fast backend."""
    return resolve_compile(None, device) or cfg.compile_backend != "inductor"


def _triton_version() -> str | None:
    if not kernels.HAS_TRITON:
        return None
    import triton

    return triton.__version__


def _f(value, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def format_markdown(report: dict) -> str:
    env, ceil = report["environment"], report["ceilings"]
    lines = [
        "# MUSE speed benchmark", "",
        f"- device: {env['device_name']} ({env['device']}), torch {env['torch_version']}, "
        f"triton {report['triton']}, git {env['git']}, {env['timestamp']}",
        f"- command: `{report['command']}`", f"- timing: {report['timing']}",
        f"- ceilings: copy {ceil['copy_GBps']:,.1f} GB/s; GEMM {ceil['gemm_TFLOPs']:,.4g} TFLOP/s "
        f"({ceil['gemm_dtype']}, n = {ceil['gemm_size']})", "",
        "## Ops", "",
    ]
    if not report["ops"]:
        lines.append("Not run (`--no-ops`).")
    else:
        lines += [
            "Ops are timed as CUDA graphs of their calls (GPU work, no host dispatch); % copy is against the "
            "ceiling, % same-size copy against a copy of the op's forward bytes timed the same way.", "",
            "| op | variant | fwd µs | fwd GB/s (% copy; % same-size copy) | fwd+bwd µs "
            "| fwd+bwd GB/s (% copy; % same-size copy) |",
            "|---|---|---:|---:|---:|---:|",
        ]
    for r in report["ops"]:
        if r["op"] == "complex_linear":
            continue
        if r["status"] != "measured":
            lines.append(f"| {r['op']} | {r['variant']} | {r['status']}: {r.get('reason', '')} | | | |")
            continue
        lines.append(f"| {r['op']} | {r['variant']} | {r['fwd_s'] * 1e6:,.1f} | {r['fwd_GBps']:,.1f} "
                     f"({r['fwd_pct_copy']:.0f} %; {r['fwd_pct_copy_same']:.0f} %) | {r['fwd_bwd_s'] * 1e6:,.1f} | "
                     f"{r['fwd_bwd_GBps']:,.1f} ({r['fwd_bwd_pct_copy']:.0f} %; {r['fwd_bwd_pct_copy_same']:.0f} %) |")
    for r in report["ops"]:
        if r["op"] == "complex_linear":
            lines += ["", _complex_linear_line(r)]
    lines += ["", "## Models", "",
              "| model | variant | inference tok/s | fwd+bwd tok/s | compile s | inference % GEMM | fwd+bwd % GEMM |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["models"]:
        if r["status"] != "measured":
            lines.append(f"| {r['model']} | {r['variant']} | {r['status']}: {r.get('reason', '')} | | | | |")
            continue
        amp = (f" ({r['autocast']} autocast)" if r.get("autocast")
               else f" ({r['weights']} weights)" if r.get("weights") else "")
        lines.append(f"| {r['model']} | {r['variant']}{amp} | "
                     f"{_f(r['infer_tok_s'])} | {_f(r['train_tok_s'])} | {_f(r['compile_s'], '.1f')} | "
                     f"{_f(r['infer_pct_gemm'], '.1f')} | {_f(r['train_pct_gemm'], '.1f')} |")
    for model, vs in report.get("versus_gpt", {}).items():
        parts = [f"{name} {v['ratio']:.2f}× ({v[model + '_variant']} vs {v['gpt_variant']})"
                 for name, v in (("inference", vs["inference"]), ("fwd+bwd", vs["fwd_bwd"])) if v["ratio"] is not None]
        if parts:
            lines += ["", f"{model} / gpt, each at its fastest measured variant: " + "; ".join(parts) + "."]
    if report.get("versus_gpt") and not report.get("gpt_half_weights_measured"):
        lines += ["", "The GPT ran here only under autocast over fp32 weights (a cast of every weight each call, an fp32 "
                      "residual stream), which flatters the 16-bit models; add the variant "
                      "compiled+kernels+cudagraphs+half-weights for the GPT run from bf16 weights, as they run."]
    if report["skipped_variants"]:
        lines += ["", f"Not run here: {', '.join(report['skipped_variants'])} (inductor compiles only where "
                      "--compile is the default; pass compile_backend to force)."]
    return "\n".join(lines) + "\n"


__all__ = ["Complex64Stage1", "MODEL_ROWS", "SpeedConfig", "VARIANTS", "complex_linear_rows", "format_markdown", "fused_rows",
           "gemm_flops_per_token", "graph_seconds", "run_speed_benchmark", "time_complex_linear", "time_fused", "versus"]
