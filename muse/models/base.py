"""What every MUSE language model shares: the forward loop, config handling, non-finite counters, statistics.

A model defines ``embed`` (ids -> activations), ``blocks`` (called as ``block(x, stats)``,
``stats`` a dict to fill with the block's diagnostics or None), ``final_norm``,
``head_input`` (activations -> the real (B, S, d) tensor the head reads; identity by
default) and ``lm_head`` (a module with ``.weight`` (V, d) and ``.bias`` (V,) or None).
``lm_head.weight`` is the one accessor of the head's weight (forward, the fused loss, the
counters below): a parameter, or for a tied head a view of the token table.

A config with ``pointer_dim > 0`` adds ``pointer`` (:class:`muse.nn.PointerMixture`, the learned
copy path over the window; None otherwise): ``forward`` then returns the mixture's
log-probabilities, the loss (:func:`muse.train.model_loss`) mixes the head's per-token loss with
it, and :meth:`step` carries the window's keys beside the model's own cache (:class:`PointerCache`).

The counters live on the model's device and are updated without host syncs: slot 0
counts forwards whose embedding held a NaN/Inf, slot i+1 layer i, the last slot forwards
whose logits are not proven finite (below) — under ``return_hidden=True`` forwards whose
head input held a NaN/Inf. ``get_statistics()`` is the one place that reads them.

The logits are never read back for the count (a second pass over B·S·V values cost a fifth of
compiled Stage 1 inference): by Cauchy-Schwarz every abs(logit) <= max_v (H · norm(w_v) + abs(b_v)),
H = max_t norm(h_t), so a forward counts when that bound (fp32, from the head input and the head)
is not below the logits' dtype range with a 2^-8 margin for the GEMM's rounding.  Per row, the bias
joins the pass over the head's rows (no pass of its own) and the bound is no looser than
H · max_v norm(w_v) + max_v abs(b_v). A NaN/Inf
in the head input or the head, or an overflow, always counts; a forward whose bound reaches the
range but whose logits stayed finite counts too (a model that close to overflow is worth a warning).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

import muse.complex as C
from muse._checks import check_int, check_token_ids, check_type
from muse.nn.pointer import PointerMixture


class _TokensSoFar:
    """``length`` and ``batch_size`` of a decoding state that keeps every id so far in ``ids`` (B, length)."""

    ids: torch.Tensor

    @property
    def length(self) -> int:
        return self.ids.shape[1]

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]


@dataclass
class PointerCache(_TokensSoFar):
    """The decoding state of a model with a copy path: the model's own cache (``inner``), the unit keys
    (B, length, d_key) and the ids (B, length) of the window so far."""

    inner: object
    keys: torch.Tensor
    ids: torch.Tensor


@dataclass
class ContextCache(_TokensSoFar):
    """The fallback decoding state of :meth:`LanguageModel.step_hidden`: every token so far, (B, length)."""

    ids: torch.Tensor


class LanguageModel(nn.Module):
    """Base class: ``forward(input_ids, positions=None, return_diagnostics=False, return_hidden=False)``."""

    config_cls: type = type(None)

    def __init__(self, config=None, device=None, **overrides):
        super().__init__()
        if config is None:
            config = self.config_cls(**overrides)
        elif overrides:
            check_type("config", config, self.config_cls, f"a {self.config_cls.__name__}")
            config = dataclasses.replace(config, **overrides)
        check_type("config", config, self.config_cls, f"a {self.config_cls.__name__}")
        self.config = config
        self.register_buffer("_forward_count", torch.zeros((), dtype=torch.long, device=device), persistent=False)
        self.register_buffer("_nonfinite_count", torch.zeros(config.n_layers + 2, dtype=torch.long, device=device),
                             persistent=False)
        self.pointer: PointerMixture | None = None

    def build_pointer(self, device=None) -> None:
        """Adds the copy path when ``config.pointer_dim > 0``; each model calls it last in ``__init__``,
        after its own initialisation (which would otherwise reset the pointer's linears)."""
        dim = getattr(self.config, "pointer_dim", 0)
        if dim:
            self.pointer = PointerMixture(head_width(self.config), dim, mode=getattr(self.config, "pointer_mode", "cache"),
                                          device=device)

    @classmethod
    def upgrade_key(cls, name: str) -> str:
        """A parameter or buffer name an earlier version of this model saved -> today's name.

        The identity here; a model that renames a submodule overrides it, so that state dicts
        and checkpoints saved before the rename still load (``load_state_dict`` below and
        ``muse.train.load_checkpoint`` apply it).
        """
        return name

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Renames keys saved under an earlier name (:meth:`upgrade_key`) before loading."""
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new = prefix + self.upgrade_key(key[len(prefix):])
            if new != key and new not in state_dict:
                state_dict[new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor | None):
        """Validated ids (B, S) (and optional positions) -> the first activations (B, S, d)."""
        raise NotImplementedError

    def head_input(self, x) -> torch.Tensor:
        """The final-normed activations -> the real (B, S, d) tensor ``lm_head`` consumes."""
        return x

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None,
                return_diagnostics: bool = False, return_hidden: bool = False):
        """Logits (B, S, V), or with ``return_hidden`` the (B, S, d) head input; with
        ``return_diagnostics`` also a dict of per-stage statistics."""
        diag: dict[str, dict] = {}
        self._count_forward()
        x = self.embed(input_ids, positions)
        if return_diagnostics:
            diag["embedding"] = activation_statistics(x)
        x = self.trunk(x, diag if return_diagnostics else None)
        out = self.head_input(x)  # (B, S, d)
        if return_hidden:
            self._count_nonfinite(-1, out)
        else:
            h = out
            out = self.lm_head(h)  # (B, S, V)
            self._count_logits_unproven(h, out.dtype)
            if self.pointer is not None:
                out = self.pointer.log_probs(h, input_ids, out)  # (B, S, V) fp32 log-probabilities
        if not return_diagnostics:
            return out
        diag["final_norm"] = activation_statistics(x)
        if not return_hidden:
            diag["output"] = logits_statistics(out)
        return out, diag

    def trunk(self, x, diag: dict | None = None):
        """The blocks and the final norm over the first activations ``x``, counting the non-finite values of
        ``x`` and of each block's output; with ``diag`` each block's statistics go into it."""
        self._count_nonfinite(0, x)
        for i, block in enumerate(self.blocks):
            stats: dict | None = {} if diag is not None else None
            x = block(x, stats)
            self._count_nonfinite(i + 1, x)
            if diag is not None:
                diag[f"layer_{i}"] = {**activation_statistics(x), **stats}
        return self.final_norm(x)

    @torch.no_grad()
    def step(self, input_ids: torch.Tensor, cache=None) -> tuple[torch.Tensor, object]:
        """Incremental decoding: logits (B, T, V) of ``input_ids`` (B, T) placed after ``cache``.

        ``cache=None`` starts at position 0; each later call passes the cache the previous call
        returned (a new object; the one passed in is left unchanged).  The logits equal those of
        ``forward`` on the whole sequence (up to rounding).  The head applied to
        :meth:`step_hidden`, the model's own incremental path; with a ``pointer`` the copy path over
        a :class:`PointerCache` (the model's cache plus the window's unit keys and ids: O(window)
        work and memory per token).  The context is capped at ``max_seq_len`` (ValueError beyond).
        Runs without gradients; call ``eval()`` first, or dropout applies.
        """
        if self.pointer is None:
            h, cache = self.step_hidden(input_ids, cache)
            return self.lm_head(h), cache
        if cache is not None:
            check_type("cache", cache, PointerCache, "a PointerCache or None (the model has a pointer)")
        h, inner = self.step_hidden(input_ids, None if cache is None else cache.inner)
        past = 0 if cache is None else cache.length
        ids = input_ids if cache is None else torch.cat([cache.ids, input_ids], dim=1)
        q, k, theta, gate = self.pointer.project(h)
        keys = k if cache is None else torch.cat([cache.keys, k], dim=1)
        logits = self.pointer.mix(q, keys, theta, gate, ids, self.lm_head(h), past)
        return logits, PointerCache(inner, keys, ids)

    def step_hidden(self, input_ids: torch.Tensor, cache: ContextCache | None = None
                    ) -> tuple[torch.Tensor, ContextCache]:
        """The head input (B, T, d) of ``input_ids`` (B, T) placed after ``cache``, and the new cache.

        The fallback for a model without a recurrent state or KV cache: it re-runs ``forward``
        over the whole context, O(S) work per new token at context length S.  Models with an
        O(1)-per-token path override it (the GPT's KV cache, Stage 1's and Phase 2's recurrent
        states), taking and returning their own cache.
        """
        if cache is not None:
            check_type("cache", cache, ContextCache, "a ContextCache or None")
        input_ids = self.check_step(input_ids, cache)
        ids = input_ids if cache is None else torch.cat([cache.ids, input_ids], dim=1)  # (B, S)
        return self(ids, return_hidden=True)[:, -input_ids.shape[1]:], ContextCache(ids)

    def check_layer_cache(self, cache, cls: type, name: str) -> None:
        """A recurrent model's ``cache``: None or a ``cls`` (``name`` in the error) with one entry per block."""
        if cache is None:
            return
        check_type("cache", cache, cls, f"a {name} or None")
        if len(cache.layers) != len(self.blocks):
            raise ValueError(f"cache has {len(cache.layers)} layers, the model {len(self.blocks)}")

    def check_step(self, input_ids: object, cache) -> torch.Tensor:
        """``input_ids`` (B, T >= 1) as int64, checked against ``cache`` (its ``length`` and
        ``batch_size``, or None) and ``max_seq_len``: the checks every :meth:`step` shares."""
        input_ids = check_token_ids("input_ids", input_ids, self.config.vocab_size)
        b, t = input_ids.shape
        if t == 0:
            raise ValueError("input_ids must hold at least one token per row, got shape (B, 0)")
        past = 0 if cache is None else cache.length
        if cache is not None and cache.batch_size != b:
            raise ValueError(f"input_ids has batch size {b}, the cache {cache.batch_size}")
        if past + t > self.max_seq_len:
            raise ValueError(f"cache length {past} + {t} new tokens exceeds max_seq_len={self.max_seq_len}")
        return input_ids

    @property
    def mixes_tokens(self) -> bool:
        """Whether a logit at t may depend on tokens before t; a config without a token mixer says False."""
        return getattr(self.config, "mixes_tokens", True)

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def _count_forward(self) -> None:
        self._forward_count += 1

    @torch.no_grad()
    def _count_nonfinite(self, slot: int, values) -> None:
        """Slot 0: embedding, i+1: layer i, -1: logits; ``values`` a tensor or a ComplexTensor."""
        if isinstance(values, C.ComplexTensor):
            values = values.planes
        self._nonfinite_count[slot] += (~torch.isfinite(values)).any()

    @torch.no_grad()
    def _count_nonfinite_flags(self, first: int, flags: torch.Tensor) -> None:
        """Slots first.. += flags (0 or 1 each): per-stage flags a fused pass set, as :meth:`_count_nonfinite` counts."""
        self._nonfinite_count[first : first + flags.numel()] += flags

    @torch.no_grad()
    def _count_logits_unproven(self, h: torch.Tensor, dtype: torch.dtype) -> None:
        """Last slot += 1 unless the Cauchy-Schwarz bound of the logits (module docstring) is below
        the range of ``dtype``; reads ``h`` (B, S, d) and the head, never the logits."""
        if h.numel() == 0:
            return
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32
        w, b = self.lm_head.weight, self.lm_head.bias
        per_row = torch.linalg.vector_norm(h, dim=-1, dtype=acc).amax() * torch.linalg.vector_norm(w, dim=-1, dtype=acc)
        if b is not None:
            per_row = per_row + b.abs().to(acc)
        bound = per_row.amax()
        self._nonfinite_count[-1] += ~(bound < torch.finfo(dtype).max * (1 - 2**-8))  # NaN: counted

    def get_statistics(self) -> dict:
        """Forward count and, per stage (embedding, each layer, logits), forwards that produced non-finite
        values (logits: not proven finite, see the module docstring)."""
        n = int(self._forward_count.item())
        per = [int(v) for v in self._nonfinite_count.tolist()]
        names = ["embedding"] + [f"layer_{i}" for i in range(self.config.n_layers)] + ["logits"]
        return {
            "forward_count": n,
            "nonfinite_count": per[-1],
            "nonfinite_rate": per[-1] / max(n, 1),
            "nonfinite_by_stage": dict(zip(names, per, strict=True)),
        }

    def reset_statistics(self) -> None:
        self._forward_count.zero_()
        self._nonfinite_count.zero_()


def logits_statistics(logits: torch.Tensor) -> dict:
    """Diagnostics of the output logits (computed in fp32)."""
    with torch.no_grad():
        lf = logits.float()
        return {
            "logits_mean": lf.mean().item(),
            "logits_std": lf.std().item() if lf.numel() > 1 else 0.0,
            "logits_min": lf.min().item() if lf.numel() else 0.0,
            "logits_max": lf.max().item() if lf.numel() else 0.0,
            "nonfinite": int((~torch.isfinite(lf)).sum().item()),
        }


def activation_statistics(x) -> dict:
    """Diagnostics of one stage's activations: magnitude/phase and the planar flag for a
    ComplexTensor, mean/std/max |x| for a real tensor (computed in fp32)."""
    with torch.no_grad():
        if isinstance(x, C.ComplexTensor):
            mag, ph = C.abs(x).float(), C.angle(x).float()
            return {
                "magnitude_mean": mag.mean().item(),
                "magnitude_std": mag.std().item() if mag.numel() > 1 else 0.0,
                "phase_mean": ph.mean().item(),
                "phase_std": ph.std().item() if ph.numel() > 1 else 0.0,
                "nonfinite": int((~x.isfinite()).sum().item()),
                "planar": x.is_planar(),
            }
        xf = x.float()
        return {
            "mean": xf.mean().item(),
            "std": xf.std().item() if xf.numel() > 1 else 0.0,
            "abs_max": xf.abs().max().item() if xf.numel() else 0.0,
            "nonfinite": int((~torch.isfinite(xf)).sum().item()),
        }


def pointer_parameter_count(config) -> int:
    """Parameters of the copy path a config asks for (0 without one)."""
    dim = getattr(config, "pointer_dim", 0)
    return PointerMixture.parameter_count(head_width(config), dim) if dim else 0


def head_width(config) -> int:
    """Features the head (and the copy path) reads a token: the config's ``head_width``, else d_model."""
    return getattr(config, "head_width", config.d_model)


def check_config_sizes(config, *, heads: bool = False) -> None:
    """Validate the size fields every LM config has (vocab_size, d_model, n_layers, max_seq_len)
    and, with ``heads``, n_heads (which must divide d_model) and ffn_mult."""
    check_int("vocab_size", config.vocab_size, min_value=1)
    check_int("d_model", config.d_model, min_value=1)
    check_int("n_layers", config.n_layers, min_value=0)
    check_int("max_seq_len", config.max_seq_len, min_value=1)
    if heads:
        check_int("n_heads", config.n_heads, min_value=1)
        if config.d_model % config.n_heads:
            raise ValueError(f"d_model ({config.d_model}) must be divisible by n_heads ({config.n_heads})")
        check_int("ffn_mult", config.ffn_mult, min_value=1)
