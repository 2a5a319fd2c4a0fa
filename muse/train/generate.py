"""Autoregressive text generation for every registered model, one token at a time.

Each model decodes through ONE interface, ``model.step(input_ids, cache) -> (logits, cache)``
(:meth:`muse.models.base.LanguageModel.step`): the GPT carries a KV cache, Stage 1 its
per-layer recurrence state (nothing for the seed's per-token block), both O(1) model work
per token beyond attention's O(S) read of the cache; Phase 2 (BK-Core + Hebbian) has no
incremental form yet and falls back to re-running the forward over the whole context,
O(S) per token.  The context is capped at the model's ``max_seq_len``: the prompt plus the
new tokens must fit, checked before any work.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from muse._checks import check_float, check_int, check_token_ids, check_type
from muse.models.base import LanguageModel


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids (B,) from logits (B, V): greedy (argmax) at ``temperature`` 0, else a draw
    from softmax(logits / temperature) restricted to the ``top_k`` largest (None = all)."""
    temperature = check_float("temperature", temperature, min_value=0.0)
    if top_k is not None:
        check_int("top_k", top_k, min_value=1)
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
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: LanguageModel, prompt_ids: torch.Tensor, max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield ``max_new_tokens`` new token ids (B,), one per step, after ``prompt_ids`` (B, P >= 1).

    The model must be in eval mode (no dropout).  ``generator`` (on the model's device) makes
    the draws reproducible; ``temperature`` 0 is greedy and needs none.  Every argument is
    checked before the first forward.
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
    check_float("temperature", temperature, min_value=0.0)
    if top_k is not None:
        check_int("top_k", top_k, min_value=1)
    if generator is not None:
        check_type("generator", generator, torch.Generator, "a torch.Generator or None")
        device = next(model.parameters()).device
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, the model on {device}")
    ids, cache = prompt_ids, None
    for _ in range(max_new_tokens):
        logits, cache = model.step(ids, cache)
        ids = sample_next(logits[:, -1], temperature, top_k, generator)[:, None]  # (B, 1)
        yield ids[:, 0]


__all__ = ["generate", "sample_next"]
