"""Model registry: name -> (config class, model class, presets); one way to build any model."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from torch import nn

from muse._checks import check_type
from muse.models import gpt, phase2, stage1


class ModelSpec(NamedTuple):
    config_cls: type
    model_cls: type
    presets: dict[str, dict]


MODELS: dict[str, ModelSpec] = {
    "stage1": ModelSpec(stage1.Stage1Config, stage1.Stage1Model, stage1.PRESETS),
    "phase2": ModelSpec(phase2.Phase2Config, phase2.Phase2Model, phase2.PRESETS),
    "gpt": ModelSpec(gpt.GPTConfig, gpt.GPTModel, gpt.PRESETS),
}


def model_names() -> list[str]:
    return sorted(MODELS)


def make_config(name: str, preset: str = "tiny", **overrides):
    """The config of model ``name`` at ``preset``, with keyword ``overrides`` applied."""
    check_type("name", name, str, "a model name")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {model_names()}")
    spec = MODELS[name]
    if preset not in spec.presets:
        raise ValueError(f"unknown preset {preset!r} for {name}; choose one of {sorted(spec.presets)}")
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {name}; valid: {sorted(fields)}")
    config = spec.config_cls(**{**spec.presets[preset], **overrides})
    unused = _unused_fields(config)
    defaults = {f.name: f.default for f in dataclasses.fields(spec.config_cls)}
    ignored = sorted(k for k, v in overrides.items()
                     if k in unused and v != spec.presets[preset].get(k, defaults[k]))
    if ignored:
        selectors = ", ".join(f"{k}={getattr(config, k)!r}" for k in ("mixer", "ffn", "pointer_dim")
                              if hasattr(config, k))
        raise ValueError(f"config field(s) have no effect on {name} with {selectors}: "
                         + ", ".join(f"{k} (needs {unused[k]})" for k in ignored))
    return config


def _unused_fields(config) -> dict[str, str]:
    """The fields ``config``'s model never reads, each with what would read it: its own rule (Stage 1's
    variants) and the copy path's."""
    unused = dict(config.unused_fields()) if hasattr(config, "unused_fields") else {}
    if getattr(config, "pointer_dim", None) == 0:
        unused["pointer_mode"] = "pointer_dim > 0"
    return unused


def build_model(name: str, preset: str = "tiny", device=None, **overrides) -> nn.Module:
    """Instantiate model ``name`` at ``preset`` on ``device``."""
    config = make_config(name, preset, **overrides)
    return MODELS[name].model_cls(config, device=device)
