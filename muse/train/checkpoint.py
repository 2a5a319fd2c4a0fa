"""Checkpoints as safetensors: named tensors plus JSON metadata, written atomically.

Layout (tensor names):
  ``model.<name>``           model parameters and persistent buffers (fp16 for Stage 1)
  ``master.<name>``          fp32 master weights (Stage 1 only)
  ``optim.<key>.<name>``     AdamW state: ``exp_avg``, ``exp_avg_sq``, ``step``
  ``rng.<rank>.<key>``       each rank's RNG: ``torch_cpu`` (uint8), ``cuda`` (uint8, when
                             present), ``numpy_keys``/``numpy_pos``/``numpy_gauss``,
                             ``python_state``/``python_gauss``
Metadata (all JSON strings): ``format``, ``model_name``, ``model_config``, ``train_config``,
``optimizer`` (parameter order, AdamW groups, loss-scaler state), ``data_state``
(``TrainBlocks.state_dict()``), ``counters`` (step, tokens seen, ...), ``world_size``.
Nothing is ever unpickled: loading is ``safetensors.torch.load_file`` and ``json.loads``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from muse._io import atomic_path

FORMAT = "muse-checkpoint/v1"
JSON_KEYS = ("model_config", "train_config", "optimizer", "data_state", "counters")


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors on CPU and decoded metadata."""

    tensors: dict[str, torch.Tensor]
    model_name: str
    model_config: dict
    train_config: dict
    optimizer: dict
    data_state: dict
    counters: dict
    world_size: int

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors whose name starts with ``prefix``, with the prefix removed."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: str | os.PathLike) -> Path:
    """Write a safetensors file so that ``path`` is always either the old or the new file.

    The data goes to a temporary file in the same directory, is fsynced, and replaces
    ``path`` with ``os.replace`` (atomic on POSIX); the directory is fsynced afterwards.
    A failure at any point removes the temporary file and leaves ``path`` untouched.
    """
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return Path(path)


def build_metadata(*, model_name: str, model_config: dict, train_config: dict, optimizer: dict,
                   data_state: dict, counters: dict, world_size: int) -> dict[str, str]:
    """String metadata for :func:`atomic_save` (JSON per entry; floats round-trip exactly)."""
    values = {"model_config": model_config, "train_config": train_config, "optimizer": optimizer,
              "data_state": data_state, "counters": counters}
    meta = {k: json.dumps(v, sort_keys=True) for k, v in values.items()}
    meta.update(format=FORMAT, model_name=model_name, world_size=str(world_size))
    return meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by the trainer; clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a MUSE training checkpoint (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    decoded = {}
    for key in JSON_KEYS:
        if key not in meta:
            raise ValueError(f"{path}: checkpoint metadata has no {key!r} field")
        try:
            decoded[key] = json.loads(meta[key])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: checkpoint metadata field {key!r} is not valid JSON ({exc})") from None
        if not isinstance(decoded[key], dict):
            raise ValueError(f"{path}: checkpoint metadata field {key!r} must be a JSON object, "
                             f"got {type(decoded[key]).__name__}")
    try:
        world_size = int(meta.get("world_size", ""))
    except ValueError:
        raise ValueError(f"{path}: checkpoint metadata field 'world_size' must be an integer, "
                         f"got {meta.get('world_size')!r}") from None
    if "model_name" not in meta:
        raise ValueError(f"{path}: checkpoint metadata has no 'model_name' field")
    ck = Checkpoint(tensors=load_file(str(path), device="cpu"), model_name=meta["model_name"],
                    world_size=world_size, **decoded)
    return _upgrade_names(ck)


def _upgrade_names(ck: Checkpoint) -> Checkpoint:
    """Parameter names saved by an earlier version of a registered model -> today's names
    (``model.``, ``master.``, ``optim.<key>.`` tensors and the optimizer's parameter order),
    by the model class's ``upgrade_key``; a checkpoint of an unregistered model is left as is."""
    from muse.models.registry import MODELS

    spec = MODELS.get(ck.model_name)
    if spec is None:
        return ck
    upgrade = spec.model_cls.upgrade_key

    def rename(key: str) -> str:
        for prefix in ("model.", "master."):
            if key.startswith(prefix):
                return prefix + upgrade(key[len(prefix):])
        if key.startswith("optim.") and key.count(".") >= 2:
            _, state_key, name = key.split(".", 2)
            return f"optim.{state_key}.{upgrade(name)}"
        return key

    ck.tensors = {rename(k): v for k, v in ck.tensors.items()}
    if isinstance(ck.optimizer.get("names"), list):
        ck.optimizer["names"] = [upgrade(n) if isinstance(n, str) else n for n in ck.optimizer["names"]]
    return ck


def load_model_state(model: torch.nn.Module, ck: Checkpoint, path: str | os.PathLike) -> None:
    """Copy the checkpoint's ``model.*`` tensors into ``model``; ValueError naming the file and the
    missing, unexpected or mis-shaped tensors (instead of load_state_dict's RuntimeError)."""
    saved, own = ck.prefixed("model."), model.state_dict()
    problems = [f"missing model.{k}" for k in sorted(set(own) - set(saved))]
    problems += [f"unexpected model.{k}" for k in sorted(set(saved) - set(own))]
    problems += [f"model.{k} has shape {tuple(saved[k].shape)}, the model needs {tuple(own[k].shape)}"
                 for k in sorted(set(own) & set(saved)) if saved[k].shape != own[k].shape]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValueError(f"{path}: the weights do not fit the {ck.model_name!r} model its config describes: "
                         + "; ".join(problems[:5]) + more)
    with torch.no_grad():
        model.load_state_dict(saved, strict=True)


def nonfinite_tensors(ck: Checkpoint, prefixes: tuple[str, ...] = ("model.", "master.", "optim.")) -> list[str]:
    """Names of floating tensors under ``prefixes`` that hold a NaN or an infinity."""
    return [name for name, t in sorted(ck.tensors.items())
            if name.startswith(prefixes) and t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_compatible(ckpt: Checkpoint, model_name: str, model_config: dict, trajectory: dict) -> None:
    """ValueError unless the checkpoint's model and loss-curve settings equal this run's."""
    if ckpt.model_name != model_name:
        raise ValueError(f"checkpoint is a {ckpt.model_name!r} model, this run builds {model_name!r}")
    diff = _diff(_with_defaults(model_name, ckpt.model_config), model_config)
    if diff:
        raise ValueError(f"checkpoint model config differs from this run's: {diff}")
    from muse.train.config import TrainConfig

    defaults = TrainConfig().to_dict()  # a setting added after the checkpoint was written: its default
    saved = {k: ckpt.train_config[k] if k in ckpt.train_config else defaults.get(k) for k in trajectory}
    diff = _diff(saved, trajectory)
    if diff:
        raise ValueError(f"checkpoint training settings differ from this run's (resume needs the same): {diff}")


def _with_defaults(model_name: str, saved: dict) -> dict:
    """``saved`` with the model config's default for every field it lacks: a checkpoint written before a
    field existed was built as that field's default builds (new fields default to the old behaviour),
    which is also how :func:`model_from_checkpoint` rebuilds it."""
    from muse.models.registry import MODELS

    spec = MODELS.get(model_name)
    if spec is None or not dataclasses.is_dataclass(spec.config_cls):
        return saved
    filled = dict(saved)
    for f in dataclasses.fields(spec.config_cls):
        if f.name in filled:
            continue
        if f.default is not dataclasses.MISSING:
            filled[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            filled[f.name] = f.default_factory()
    return filled


def _diff(saved: dict, current: dict) -> str:
    keys = sorted(set(saved) | set(current))
    parts = [f"{k}: checkpoint {saved.get(k)!r} vs run {current.get(k)!r}"
             for k in keys if _normal(saved.get(k)) != _normal(current.get(k))]
    return "; ".join(parts)


def _normal(value):
    return json.loads(json.dumps(value, sort_keys=True))


# ---------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, torch.Tensor]:
    """This process's RNG states as fixed-shape tensors (so ranks can be gathered)."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()  # the current device's generator
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    out["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    out["numpy_pos"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    out["numpy_gauss"] = torch.tensor([gauss], dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    out["python_state"] = torch.tensor((version, *internal), dtype=torch.int64)
    out["python_gauss"] = torch.tensor([np.nan if gauss_next is None else gauss_next], dtype=torch.float64)
    return out


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))
    pos, has_gauss = (int(v) for v in state["numpy_pos"].tolist())
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(state["numpy_gauss"].item())))
    version, *internal = (int(v) for v in state["python_state"].tolist())
    gauss = float(state["python_gauss"].item())
    random.setstate((version, tuple(internal), None if np.isnan(gauss) else gauss))


def gather_rng(device: torch.device, world_size: int) -> dict[str, torch.Tensor]:
    """Every rank's RNG state as ``rng.<rank>.<key>`` tensors (collective when distributed)."""
    local = rng_state()
    if world_size == 1:
        return {f"rng.0.{k}": v for k, v in local.items()}
    out = {}
    for key, value in sorted(local.items()):
        moved = value.to(device)
        parts = [torch.empty_like(moved) for _ in range(world_size)]
        dist.all_gather(parts, moved)
        out.update({f"rng.{r}.{key}": p.cpu() for r, p in enumerate(parts)})
    return out


def model_from_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """``(model, checkpoint)``: the registered model rebuilt from its saved config and weights."""
    from muse.models.registry import MODELS

    ck = load_checkpoint(path)
    if ck.model_name not in MODELS:
        raise ValueError(f"{path}: checkpoint model_name {ck.model_name!r} is not registered; "
                         f"known: {sorted(MODELS)}")
    spec = MODELS[ck.model_name]
    try:
        config = spec.config_cls(**ck.model_config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: checkpoint field model_config is not a valid {spec.config_cls.__name__}: "
                         f"{exc}") from None
    model = spec.model_cls(config, device=device)
    load_model_state(model, ck, path)
    return model, ck
