"""What every MUSE language model shares: config handling, non-finite counters, statistics.

The counters live on the model's device and are updated without host syncs: slot 0
counts forwards whose embedding held a NaN/Inf, slot i+1 layer i, the last slot the
logits. ``get_statistics()`` is the one place that reads them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from muse._checks import check_type


class LanguageModel(nn.Module):
    """Base class: ``forward(input_ids, positions=None, return_diagnostics=False)`` -> logits (B, S, V)."""

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
    def _count_nonfinite(self, slot: int, values: torch.Tensor) -> None:
        """Slot 0: embedding, i+1: layer i, -1: logits."""
        self._nonfinite_count[slot] += (~torch.isfinite(values)).any()

    def get_statistics(self) -> dict:
        """Forward count and, per stage (embedding, each layer, logits), forwards that produced non-finite values."""
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
