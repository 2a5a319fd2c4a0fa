"""Measurements shared by the runners: peak memory, throughput, stability trials, layout.

Every function measures; none returns a default when it cannot. Memory is the peak of
live tensor bytes (:mod:`benchmarks.memory`) on every device and, on CUDA, also
``torch.cuda.max_memory_allocated``; each result names the measure it reports.
"""

from __future__ import annotations

import functools
import gc
import math
import statistics
import time

import torch
from torch import nn

import muse.complex as C
from benchmarks.memory import LiveTensorBytes, allocator_peak_bytes
from muse._checks import check_int
from muse.models.compile import check_mode, compile_model
from muse.train.loss import IMPLS, compile_model_loss, head_loss, lm_loss, loss_path, model_loss


def _random_batch(vocab: int, batch: int, seq: int, device: torch.device, gen: torch.Generator):
    ids = torch.randint(0, vocab, (batch, seq + 1), generator=gen).to(device)
    return ids[:, :-1], ids[:, 1:]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


LOSSES = ("fused", "full")
#: The CUDA memory measure's name in reports.
CUDA_MEASURE = "torch.cuda.max_memory_allocated (warm, minus memory not the step's)"


#: ``impl`` values of the measures: ``"fused"`` is each model's own tracker-visible fused path (what
#: ``auto`` picks, with torch's opaque ``torch-native`` op replaced by ``chunked-tokens``).
LOSS_IMPLS = ("fused", *IMPLS)


def resolve_impl(dtype: torch.dtype, impl: str) -> str:
    """The loss implementation a measure runs for a head of ``dtype`` (ValueError for an unknown one)."""
    if impl not in LOSS_IMPLS:
        raise ValueError(f"impl must be one of {LOSS_IMPLS}, got {impl!r}")
    if impl != "fused":
        return impl
    path = loss_path(dtype)
    return "chunked-tokens" if path == "torch-native" else path


def _loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: str, impl: str) -> torch.Tensor:
    """The LM loss: ``"fused"`` never forms the full logits, ``"full"`` is cross-entropy on ``model(ids)``."""
    if loss == "fused":
        return model_loss(model, inputs, targets, impl=impl)
    return lm_loss(model(inputs), targets)


def cuda_warm_up(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss: str, impl: str,
                 device: torch.device) -> int:
    """One unmeasured step (cuBLAS/cuBLASLt workspaces, created lazily per thread, exist after it),
    gradients dropped, cache emptied, peak counter reset: the bytes allocated before the next step."""
    _loss(model, inputs, targets, loss, impl).backward()
    model.zero_grad(set_to_none=True)
    gc.collect()
    _sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_memory(model: nn.Module, batch: int, seq: int, device: torch.device, seed: int = 0,
                loss: str = "fused", impl: str = "fused") -> dict:
    """Peak bytes over one forward + LM loss + backward, with the measure that exists here.

    Always: ``tracked_peak_bytes``, the peak of live tensor bytes (:class:`LiveTensorBytes`,
    any device), counting everything alive before the forward that belongs to the step
    (parameters, buffers, inputs; ``tracked_before_bytes``). On CUDA also
    ``torch.cuda.max_memory_allocated`` over the same step, after one unmeasured warm-up step
    (so cuBLAS/cuBLASLt workspaces, which are created lazily per thread and then kept, exist
    before it): ``cuda_raw_peak_bytes`` is the allocator's figure, ``cuda_foreign_bytes`` what
    was allocated before the step and is not the model's (those workspaces, anything an
    earlier run left), and ``cuda_peak_bytes`` = raw - foreign, the step's own peak;
    ``agreement`` = tracked / cuda_peak. ``peak_bytes`` is the CUDA figure where it exists,
    else the tracked one; ``measure`` names it; ``before_bytes`` is the step's part alive before.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    gen = torch.Generator().manual_seed(seed)
    inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
    model.zero_grad(set_to_none=True)
    model.train()
    impl = resolve_impl(model.lm_head.weight.dtype, impl)
    path = loss_path(model.lm_head.weight.dtype, impl) if loss == "fused" else "full logits + fp32 cross-entropy"
    cuda = device.type == "cuda"
    if cuda:
        cuda_before = cuda_warm_up(model, inputs, targets, loss, impl, device)
    with LiveTensorBytes() as tracker:
        tracker.track([*model.parameters(), *model.buffers(), inputs, targets])
        tracked_before = tracker.current
        _loss(model, inputs, targets, loss, impl).backward()
        _sync(device)
    result = {"loss": loss, "loss_path": path, "batch": batch, "seq": seq,
              "tracked_peak_bytes": tracker.peak, "tracked_before_bytes": tracked_before,
              "cuda_peak_bytes": None, "cuda_raw_peak_bytes": None, "cuda_foreign_bytes": None,
              "cuda_before_bytes": None, "agreement": None}
    if cuda:
        raw = torch.cuda.max_memory_allocated(device)
        foreign = max(cuda_before - tracked_before, 0)
        peak = raw - foreign
        result.update(cuda_peak_bytes=peak, cuda_raw_peak_bytes=raw, cuda_foreign_bytes=foreign,
                      cuda_before_bytes=cuda_before - foreign, agreement=tracker.peak / peak,
                      peak_bytes=peak, before_bytes=cuda_before - foreign, measure=CUDA_MEASURE)
    else:
        result.update(peak_bytes=tracker.peak, before_bytes=tracked_before, measure="live tensor bytes")
    result["peak_minus_before_bytes"] = result["peak_bytes"] - result["before_bytes"]
    model.zero_grad(set_to_none=True)
    return result


#: The measure of :func:`compiled_peak_memory` on the CPU.
CPU_ALLOCATOR_MEASURE = "CPU allocator events (torch.profiler) above the start, plus the step's tensors alive before"


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages under ``tensors`` (views of one storage count once)."""
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_meta:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def compiled_peak_memory(model: nn.Module, batch: int, seq: int, device: torch.device, seed: int = 0,
                         backend: str = "inductor") -> dict:
    """Peak bytes over one forward + fused loss + backward of the step compiled training runs.

    The step is :func:`muse.train.loss.compile_model_loss` (model and loss one graph, the loss path
    ``auto`` as in ``muse train --compile``), after two unmeasured steps (compiling, library workspaces).
    A dispatch-mode tracker cannot see inside compiled code, so this uses the allocator: on CUDA
    ``torch.cuda.max_memory_allocated`` minus what is not the step's, as :func:`peak_memory` does; on
    the CPU torch.profiler's allocator events above the start, plus the parameters, buffers and batch.
    ``before_bytes`` is the step's part alive before it (parameters, buffers, batch).
    """
    check_int("batch", batch, min_value=1)
    check_int("seq", seq, min_value=1)
    gen = torch.Generator().manual_seed(seed)
    inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
    model.zero_grad(set_to_none=True)
    model.train()
    step = compile_model_loss(model, backend=backend)
    for _ in range(2):
        step(inputs, targets).backward()
        model.zero_grad(set_to_none=True)
    before = _storage_bytes([*model.parameters(), *model.buffers(), inputs, targets])
    gc.collect()
    _sync(device)
    result = {"compiled": True, "backend": backend, "loss_path": loss_path(model.lm_head.weight.dtype),
              "batch": batch, "seq": seq, "before_bytes": before}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
        step(inputs, targets).backward()
        _sync(device)
        foreign = max(cuda_before - before, 0)
        result.update(peak_bytes=torch.cuda.max_memory_allocated(device) - foreign, measure=CUDA_MEASURE)
    else:
        above = allocator_peak_bytes(lambda: step(inputs, targets).backward())
        result.update(peak_bytes=before + above, measure=CPU_ALLOCATOR_MEASURE)
    result["peak_minus_before_bytes"] = result["peak_bytes"] - before
    model.zero_grad(set_to_none=True)
    return result


def _compiled_step(model: nn.Module, loss: str, impl: str, mode: str | None = None):
    """(inputs, targets) -> loss with the model and the loss compiled as one graph (fullgraph);
    ``mode``: None or "reduce-overhead" (CUDA graphs)."""
    if loss == "fused":
        return compile_model_loss(model, impl=impl, mode=mode)
    check_mode(mode)
    C.set_gemm_policy()
    return torch.compile(lambda inputs, targets: lm_loss(model(inputs), targets), fullgraph=True, mode=mode)


def throughput(model: nn.Module, batch: int, seq: int, device: torch.device, steps: int = 10,
               warmup: int = 3, train: bool = True, seed: int = 0, loss: str = "fused",
               impl: str = "fused", compiled: bool = False, compile_mode: str | None = None) -> dict:
    """Tokens per second of forward(+loss+backward when ``train``), median over ``steps`` timed runs.

    ``compiled``: the model and the loss run as one ``torch.compile`` graph (inference: the
    compiled model), with ``compile_mode`` (None or "reduce-overhead": CUDA graphs); compilation
    happens in the warm-up runs, which are not timed. Gradients are set to None after each step.
    """
    steps = check_int("steps", steps, min_value=1)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    impl = resolve_impl(model.lm_head.weight.dtype, impl)
    gen = torch.Generator().manual_seed(seed)
    inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
    model.train(train)
    if compiled:
        step = (_compiled_step(model, loss, impl, compile_mode) if train
                else compile_model(model, fullgraph=True, mode=compile_mode))
        warmup = max(warmup, 2)
    else:
        step = functools.partial(_loss, model, loss=loss, impl=impl) if train else model
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        if compiled and compile_mode is not None:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs may be overwritten
        if train:
            step(inputs, targets).backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                step(inputs)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"tokens_per_second": batch * seq / med, "median_seconds": med, "steps": steps,
            "batch": batch, "seq": seq, "mode": "train (fwd+bwd)" if train else "inference",
            "loss": loss if train else None, "compiled": compiled, "compile_mode": compile_mode if compiled else None}


def stability_trials(model: nn.Module, trials: int, batch: int, seq: int, device: torch.device,
                     grad_range: tuple[float, float] = (1e-6, 1e3), seed: int = 0) -> dict:
    """Forward + backward on ``trials`` random inputs: non-finite rate and gradient-norm range.

    The loss is the training loss (:func:`muse.train.loss.head_loss` of the forward's head input,
    as :func:`muse.train.loss.model_loss` computes it; the copy path's too). A trial is
    non-finite when the head's input, the loss or any gradient holds NaN/Inf. Every
    parameter's gradient norm is checked in every trial; the extremes and offenders are returned.
    """
    trials = check_int("trials", trials, min_value=1)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = grad_range
    nonfinite, gmin, gmax, offenders = 0, math.inf, 0.0, {}
    model.train()
    for t in range(trials):
        inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
        model.zero_grad(set_to_none=True)
        hidden = model(inputs, return_hidden=True)
        loss = head_loss(model, hidden, inputs, targets)
        loss.backward()
        finite = bool(torch.isfinite(hidden).all()) and bool(torch.isfinite(loss))
        for name, p in model.named_parameters():
            if not p.requires_grad:  # a frozen table (the Stage 1 position table) has no gradient
                continue
            g = math.inf if p.grad is None else float(p.grad.float().norm())
            finite &= math.isfinite(g)
            if not math.isfinite(g) or not lo <= g <= hi:
                offenders.setdefault(name, []).append((t, g))
            if math.isfinite(g):
                gmin, gmax = min(gmin, g), max(gmax, g)
        nonfinite += int(not finite)
    model.zero_grad(set_to_none=True)
    return {"trials": trials, "nonfinite_trials": nonfinite, "nonfinite_rate": nonfinite / trials,
            "grad_norm_min": gmin, "grad_norm_max": gmax, "grad_range": list(grad_range),
            "grad_offenders": {k: v[:5] for k, v in offenders.items()}, "batch": batch, "seq": seq}


def planar_layout(model: nn.Module, batch: int, seq: int, device: torch.device, seed: int = 0) -> dict:
    """Check the planar layout where the memory is: ``is_planar()`` on every ComplexTensor a
    forward pass produces (forward hooks), and every tensor autograd saves for backward
    (saved-tensor hooks), none of which may be a native complex tensor (interleaved re/im)."""
    seen, bad = 0, []
    saved = {"count": 0, "bytes": 0, "interleaved": []}

    def hook(module, _inputs, output):
        nonlocal seen
        if isinstance(output, C.ComplexTensor):
            seen += 1
            if not output.is_planar():
                bad.append(type(module).__name__)

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved["count"] += 1
        saved["bytes"] += t.numel() * t.element_size()
        if t.is_complex():
            saved["interleaved"].append(f"{t.dtype} {tuple(t.shape)}")
        return t

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        gen = torch.Generator().manual_seed(seed)
        inputs, _ = _random_batch(model.config.vocab_size, batch, seq, device, gen)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(inputs)  # the graph (and the saved tensors) is freed on return
    finally:
        for h in handles:
            h.remove()
    return {"complex_activations": seen, "non_planar": bad, "saved_tensors": saved["count"],
            "saved_bytes": saved["bytes"], "saved_interleaved": saved["interleaved"]}


def unigram_perplexity(train_tokens, eval_tokens, vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model of ``train_tokens`` on ``eval_tokens[1:]``.

    A language model that does not beat this has not learned even token frequencies;
    the runner uses it to refuse "trained" for a model that was not.
    """
    import numpy as np

    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    logp = np.log(counts + 1.0) - np.log(counts.sum() + vocab_size)
    scored = np.asarray(eval_tokens, dtype=np.int64)[1:]
    return float(np.exp(-logp[scored].mean()))
