"""Measurements shared by the runners: peak memory, throughput, stability trials, layout.

Every function measures; none returns a default when it cannot. Memory is measured on
CUDA only (``torch.cuda.max_memory_allocated``); on other devices the result says
``None`` and the caller must report "not measured".
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_int
from muse.train.loss import lm_loss


def _random_batch(vocab: int, batch: int, seq: int, device: torch.device, gen: torch.Generator):
    ids = torch.randint(0, vocab, (batch, seq + 1), generator=gen).to(device)
    return ids[:, :-1], ids[:, 1:]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(model: nn.Module, batch: int, seq: int, device: torch.device, seed: int = 0) -> dict | None:
    """Peak allocated bytes over one forward + fp32 cross-entropy + backward (CUDA only).

    ``peak_bytes`` counts everything allocated at the peak (parameters, gradients,
    activations, logits); ``peak_minus_params_bytes`` subtracts what was allocated before
    the forward (parameters and buffers).
    """
    if device.type != "cuda":
        return None
    gen = torch.Generator().manual_seed(seed)
    inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
    model.zero_grad(set_to_none=True)
    model.train()
    _sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    lm_loss(model(inputs), targets).backward()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    model.zero_grad(set_to_none=True)
    return {"peak_bytes": peak, "before_bytes": before, "peak_minus_params_bytes": peak - before,
            "batch": batch, "seq": seq}


def throughput(model: nn.Module, batch: int, seq: int, device: torch.device, steps: int = 10,
               warmup: int = 3, train: bool = True, seed: int = 0) -> dict:
    """Tokens per second of forward(+backward when ``train``), median over ``steps`` timed runs."""
    steps = check_int("steps", steps, min_value=1)
    gen = torch.Generator().manual_seed(seed)
    inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
    model.train(train)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        if train:
            lm_loss(model(inputs), targets).backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                model(inputs)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"tokens_per_second": batch * seq / med, "median_seconds": med, "steps": steps,
            "batch": batch, "seq": seq, "mode": "train (fwd+bwd)" if train else "inference"}


def stability_trials(model: nn.Module, trials: int, batch: int, seq: int, device: torch.device,
                     grad_range: tuple[float, float] = (1e-6, 1e3), seed: int = 0) -> dict:
    """Forward + backward on ``trials`` random inputs: non-finite rate and gradient-norm range.

    A trial is non-finite when the logits or the loss hold NaN/Inf. Every parameter's
    gradient norm is checked in every trial; the extremes and offenders are returned.
    """
    trials = check_int("trials", trials, min_value=1)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = grad_range
    nonfinite, gmin, gmax, offenders = 0, math.inf, 0.0, {}
    model.train()
    for t in range(trials):
        inputs, targets = _random_batch(model.config.vocab_size, batch, seq, device, gen)
        model.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = lm_loss(logits, targets)
        loss.backward()
        if not (torch.isfinite(logits).all() and torch.isfinite(loss)):
            nonfinite += 1
        for name, p in model.named_parameters():
            if not p.requires_grad:  # a frozen table (the Stage 1 position table) has no gradient
                continue
            g = math.inf if p.grad is None else float(p.grad.float().norm())
            if not math.isfinite(g) or not lo <= g <= hi:
                offenders.setdefault(name, []).append((t, g))
            if math.isfinite(g):
                gmin, gmax = min(gmin, g), max(gmax, g)
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
