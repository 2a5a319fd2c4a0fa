"""Autoregressive text generation for every registered model, one token at a time.

Each model decodes through ONE interface, ``model.step(input_ids, cache) -> (logits, cache)``
(:meth:`muse.models.base.LanguageModel.step`): the GPT carries a KV cache, Stage 1 its
per-layer recurrence state (nothing for the seed's per-token block), Phase 2 its BK-Core
resolvent entry and Hebbian fast weights per layer, all O(1) model work per token beyond
attention's O(S) read of the cache.  The context is capped at the model's ``max_seq_len``: the prompt plus the
new tokens must fit, checked before any work.

The fast path (:class:`StaticDecoder`, Stage 1): after the prompt's prefill through ``step``,
each new token runs ``model.decode_step`` on static buffers updated in place, compiled with
``torch.compile`` and captured once in a CUDA graph that is replayed per token, so the host
launches one graph instead of hundreds of kernels.  Sampling stays outside the graph.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

import muse.complex as C
from muse._checks import check_float, check_int, check_tensor, check_token_ids, check_type
from muse.models.base import LanguageModel
from muse.models.compile import BACKENDS, resolve_compile, synchronize

#: How new tokens are decoded: ``step`` (the eager incremental loop), ``decode_step`` (the static
#: step, eager or compiled, no graph), ``cuda_graph`` (the static step replayed from a CUDA graph).
DECODE_PATHS = ("step", "decode_step", "cuda_graph")


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> float:
    temperature = check_float("temperature", temperature, min_value=0.0)
    if top_k is not None:
        check_int("top_k", top_k, min_value=1)
    if top_p is not None:
        check_float("top_p", top_p, min_value=0.0, min_inclusive=False, max_value=1.0)
    return temperature


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None, top_p: float | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): greedy (argmax) at ``temperature`` 0, else a draw
    from softmax(logits / temperature) restricted to the ``top_k`` largest (None = all), then to
    the nucleus: the fewest most likely tokens whose probability sums to at least ``top_p``
    (Holtzman et al. 2020; None or 1 = all; the most likely token always stays)."""
    temperature = _check_sampling(temperature, top_k, top_p)
    if generator is not None:
        check_type("generator", generator, torch.Generator, "a torch.Generator or None")
    logits = logits.float()
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more likely tokens
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def has_static_step(model: LanguageModel) -> bool:
    """Whether ``model`` offers the static decoding interface (``decode_buffers``, ``decode_step``)."""
    return callable(getattr(model, "decode_step", None)) and callable(getattr(model, "decode_buffers", None))


def resolve_fast(fast: bool | None, model: LanguageModel, device: torch.device | str) -> bool:
    """``fast`` when given (True needs :func:`has_static_step`), else True on CUDA for a model with it."""
    if fast is None:
        return torch.device(device).type == "cuda" and has_static_step(model)
    check_type("fast", fast, bool, "a bool or None")
    if fast and not has_static_step(model):
        raise ValueError(f"fast=True needs a model with decode_step (Stage 1); {type(model).__name__} has none "
                         "(use fast=False or None)")
    return fast


class StaticDecoder:
    """One token per call through ``model.decode_step`` on static buffers (the fast decoding path).

    Built from the cache that ``model.step`` left after the prompt.  The buffers (ids, recurrence
    states, position) are allocated once and updated in place.  ``compile`` wraps the step in
    ``torch.compile`` (``backend`` one of BACKENDS; a graph break would cost fusion only, as the
    capture records the kernels either way, and the tests check that there is none).  ``graph``
    (default: on for a CUDA model) warms the step up on a side stream (compiling it there),
    restores the buffers, and captures one ``torch.cuda.CUDAGraph`` that each call replays.
    ``setup_seconds`` is the time of all that (compile + warm-up + capture), apart from decoding.
    ``path`` is "cuda_graph" or "decode_step" (:data:`DECODE_PATHS`).
    """

    def __init__(self, model: LanguageModel, cache, *, compile: bool = False, graph: bool | None = None,
                 backend: str = "inductor", warmup: int = 3):
        check_type("model", model, LanguageModel, "a muse LanguageModel")
        if not has_static_step(model):
            raise ValueError(f"model must offer decode_step (Stage 1); {type(model).__name__} has none")
        device = next(model.parameters()).device
        check_type("compile", compile, bool, "a bool")
        graph = device.type == "cuda" if graph is None else graph
        check_type("graph", graph, bool, "a bool or None")
        if graph and device.type != "cuda":
            raise ValueError(f"graph=True needs a model on CUDA, this one is on {device}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        warmup = check_int("warmup", warmup, min_value=1)
        batch = getattr(cache, "batch_size", None)
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError(f"cache must be the cache model.step returned after the prompt, got {type(cache).__name__}")
        t0 = time.perf_counter()
        with torch.no_grad():  # the grad mode of every call: compiled code guards on it
            self._setup(model, cache, device, compile, graph, backend, warmup)
        self.setup_seconds = time.perf_counter() - t0

    def _setup(self, model, cache, device, compile, graph, backend, warmup) -> None:
        self.state = model.decode_buffers(cache.batch_size, cache)
        self.ids = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=device)  # token 0: valid for warm-up
        self.path = "cuda_graph" if graph else "decode_step"
        self.compiled = compile
        ids, state = self.ids, self.state

        def one_token() -> torch.Tensor:
            return model.decode_step(ids, state)

        if compile:
            C.set_gemm_policy()
        self._step = torch.compile(one_token, backend=backend) if compile else one_token
        self._graph, self._logits = None, None
        if compile or graph:  # the warm-up moves the state on: run it on a copy of the buffers' values
            saved = self._values()
            if graph:
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    for _ in range(warmup):
                        self._step()
                torch.cuda.current_stream(device).wait_stream(side)
            else:
                self._step()
            self._restore(saved)
        if graph:
            synchronize(device)
            self._graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(self._graph):
                    self._logits = self._step()
            except RuntimeError as exc:
                raise RuntimeError("capturing decode_step in a CUDA graph failed (an operation that is not "
                                   "allowed while capturing, e.g. a host sync); generate with fast=False "
                                   "(muse generate --no-fast)") from exc
        synchronize(device)

    def _buffers(self) -> list[torch.Tensor]:
        """Every tensor the step updates in place: the position, the recurrence states, the pointer's window."""
        state = self.state
        window = [t for t in (getattr(state, "pointer_keys", None), getattr(state, "pointer_ids", None)) if t is not None]
        return [state.position] + [s.planes for s in state.layers if s is not None] + window

    def _values(self) -> list[torch.Tensor]:
        return [t.clone() for t in self._buffers()]

    def _restore(self, values: list[torch.Tensor]) -> None:
        for target, value in zip(self._buffers(), values, strict=True):
            target.copy_(value)

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) of the next token ids (B, 1); with a graph, the graph's own output
        tensor, overwritten by the next call (read or copy it first)."""
        check_tensor("input_ids", input_ids)
        if tuple(input_ids.shape) != tuple(self.ids.shape):
            raise ValueError(f"input_ids must have shape {tuple(self.ids.shape)}, got {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        self.ids.copy_(input_ids)
        if self._graph is None:
            return self._step()
        self._graph.replay()
        return self._logits


@torch.no_grad()
def generate(model: LanguageModel, prompt_ids: torch.Tensor, max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, fast: bool | None = None,
             compile: bool | None = None, info: dict | None = None) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` new token ids (B,), one per step, after ``prompt_ids`` (B, P >= 1).

    The model must be in eval mode (no dropout).  ``generator`` (on the model's device) makes
    the draws reproducible; ``temperature`` 0 is greedy and needs none; ``top_k`` and ``top_p``
    restrict the draw as :func:`sample_next` says.  ``fast`` picks the
    :class:`StaticDecoder` path (default: on CUDA for a model with ``decode_step``; True on CPU
    runs the static step without a graph); ``compile`` compiles its step (default: on CUDA, the
    project's ``--compile`` rule).  ``info`` (a dict) receives ``path`` (:data:`DECODE_PATHS`),
    ``compiled`` and ``setup_s`` (compile + capture seconds) before the first token is yielded.
    Every argument is checked before the first forward.
    """
    check_type("model", model, LanguageModel, "a muse LanguageModel")
    if model.training:
        raise ValueError("model is in training mode (dropout on); call model.eval() before generating")
    prompt_ids = check_token_ids("prompt_ids", prompt_ids, model.config.vocab_size)
    if prompt_ids.shape[1] == 0:
        raise ValueError("prompt_ids must hold at least one token, got an empty prompt")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, min_value=0)
    total = prompt_ids.shape[1] + max_new_tokens
    if total > model.max_seq_len:
        raise ValueError(f"the prompt ({prompt_ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) = {total} "
                         f"exceeds the model's max_seq_len={model.max_seq_len}")
    _check_sampling(temperature, top_k, top_p)
    device = next(model.parameters()).device
    if generator is not None:
        check_type("generator", generator, torch.Generator, "a torch.Generator or None")
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {device}")
    fast = resolve_fast(fast, model, device)
    compile = resolve_compile(compile, device) and fast  # compiling applies to the static step only
    if info is not None:
        check_type("info", info, dict, "a dict or None")
    if max_new_tokens == 0:
        return
    logits, cache = model.step(prompt_ids)
    ids = sample_next(logits[:, -1], temperature, top_k, generator, top_p)[:, None]  # (B, 1)
    decoder = StaticDecoder(model, cache, compile=compile) if fast and max_new_tokens > 1 else None
    if info is not None:
        info.update(path="step" if decoder is None else decoder.path, compiled=decoder is not None and compile,
                    setup_s=0.0 if decoder is None else decoder.setup_seconds)
    yield ids[:, 0]
    for _ in range(max_new_tokens - 1):
        if decoder is None:
            logits, cache = model.step(ids, cache)
            logits = logits[:, -1]
        else:
            logits = decoder(ids)
        ids = sample_next(logits, temperature, top_k, generator, top_p)[:, None]
        yield ids[:, 0]


__all__ = ["DECODE_PATHS", "StaticDecoder", "generate", "has_static_step", "resolve_fast", "sample_next"]
