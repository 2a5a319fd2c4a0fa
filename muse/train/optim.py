"""AdamW (and optionally Muon for the hidden matrices) behind one interface for both precision schemes.

* :class:`MixedPrecisionOptimizer` (Stage 1): the model keeps fp16 parameters for compute;
  AdamW updates fp32 *master* copies; the loss is scaled by a :class:`DynamicLossScaler`,
  gradients are unscaled into fp32 master grads, checked for inf/NaN (the flag is
  all-reduced so every rank takes the same decision), clipped on the fp32 global norm, and
  after the update each fp16 parameter is rewritten from its master (one rounding).
* :class:`FullPrecisionOptimizer` (Phase 2, fp32 Stage 1): AdamW on the parameters
  themselves, optionally with ``torch.amp.GradScaler`` when autocasting to fp16.

Both skip (and count) any step whose gradients are not finite, so a NaN batch never
changes the weights and never goes unnoticed. Weight decay applies to the weight
matrices of linear layers only; norms, biases, embeddings and the position table are
not decayed (decaying an embedding shrinks rare tokens' rows, and decaying a norm gain
pulls it towards 0 rather than towards its identity value 1).  A head tied to the token
table (Stage 1's ``tie_head``) owns no weight parameter: the table is one parameter, listed
once, and not decayed, as an embedding (it holds the imaginary plane too, which only embeds).

``muon`` (``--optimizer muon``) names the matrices that :class:`muse.train.muon.Muon` updates instead of
AdamW (:func:`muon_parameter_names`: every linear weight but the head's); they keep the same learning
rate schedule and weight decay (``muon_rms``: the step's RMS per unit learning rate), and the loss scaling, skipping and clipping above are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from muse._checks import check_float, check_type
from muse.train.muon import Muon
from muse.train.scaler import DynamicLossScaler


def decay_parameter_names(model: nn.Module, embeddings: bool = False) -> set[str]:
    """Names of the parameters that get weight decay: ``weight`` of every linear layer, and with
    ``embeddings`` also of every embedding table (``nn.Embedding``, ``ComplexEmbedding``; nanoGPT's
    rule: every matrix of a matmul or a lookup, no bias or norm gain).

    A linear layer is any module with ``in_features`` and ``out_features`` (``nn.Linear``,
    ``ComplexLinear``, ``RealLinear``), so planar complex weights (2, out, in) are covered
    while planar complex biases (2, out), which are 2-D too, are not.  A tied head's ``weight``
    is a view of the embedding table, not a parameter of its own, so it is not listed.
    """
    from muse.nn import ComplexEmbedding

    names = set()
    for mod_name, module in model.named_modules():
        table = embeddings and isinstance(module, (nn.Embedding, ComplexEmbedding))
        if table or (hasattr(module, "in_features") and hasattr(module, "out_features")):
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.requires_grad:
                names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


def muon_parameter_names(model: nn.Module) -> set[str]:
    """Names of the matrices Muon updates (``--optimizer muon``): the ``weight`` of every linear layer but the
    output head (``model.lm_head``), real ``(out, in)`` or planar complex ``(2, out, in)``.  Embedding tables,
    the head, norms and biases stay with AdamW, as in Jordan's and Moonshot's runs: the head's and the tables'
    rows are per-token vectors, not one linear map on the hidden state."""
    from muse.train.muon import is_planar

    head = getattr(model, "lm_head", None)
    names = set()
    for mod_name, module in model.named_modules():
        if module is head or not (hasattr(module, "in_features") and hasattr(module, "out_features")):
            continue
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.requires_grad and (weight.ndim == 2 or is_planar(weight.shape)):
            names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm of ``grads`` in fp32 (inf/NaN when any gradient is); works on torch 2.4+."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]))


def clip_(grads: list[torch.Tensor], max_norm: float, norm: torch.Tensor) -> None:
    """Scale ``grads`` in place so their global norm is at most ``max_norm`` (no host sync)."""
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step did: ``grad_norm`` is the fp32 norm before clipping."""

    skipped: bool
    grad_norm: float
    loss_scale: float


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _agree_found_inf(norm: torch.Tensor) -> bool:
    """True when any rank saw a non-finite gradient norm (MAX all-reduce of the flag)."""
    flag = (~torch.isfinite(norm)).to(torch.float32).reshape(1)
    if _distributed():
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class _AdamWBase:
    """Shared parts: parameter groups, LR setting, named (flattened) optimizer state."""

    def __init__(self, named_parameters, *, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, no_decay: set[str] | frozenset[str], muon: set[str] | frozenset[str] = frozenset(),
                 muon_rms: float = 0.2):
        named = [(n, p) for n, p in named_parameters if p.requires_grad]
        if not named:
            raise ValueError("named_parameters is empty: nothing to optimize")
        check_float("lr", lr, min_value=0.0, min_inclusive=False)
        check_float("weight_decay", weight_decay, min_value=0.0)
        check_float("eps", eps, min_value=0.0, min_inclusive=False)
        check_type("betas", betas, (tuple, list), "a pair of floats")
        if len(betas) != 2:
            raise ValueError(f"betas must have two entries, got {len(betas)}")
        for i, b in enumerate(betas):
            check_float(f"betas[{i}]", b, min_value=0.0, max_value=1.0, max_inclusive=False)
        unknown = sorted(set(muon) - {n for n, _ in named})
        if unknown:
            raise ValueError(f"muon names parameters the model does not train: {unknown[:3]}")
        if set(muon) & set(no_decay):
            raise ValueError(f"muon and no_decay overlap: {sorted(set(muon) & set(no_decay))[:3]} (Muon decays its matrices)")
        matrices = [(n, p) for n, p in named if n in muon]
        decay = [(n, p) for n, p in named if n not in no_decay and n not in muon]
        rest = [(n, p) for n, p in named if n in no_decay]
        self.params = [p for _, p in matrices + decay + rest]  # the model's own parameters
        self.names = [n for n, _ in matrices + decay + rest]
        self.opt_params = self._optimizer_params()
        m, k = len(matrices), len(matrices) + len(decay)
        self.muon = Muon(self.opt_params[:m], lr=lr, weight_decay=weight_decay, rms=muon_rms) if matrices else None
        groups = []
        if decay:
            groups.append({"params": self.opt_params[m:k], "weight_decay": weight_decay})
        if rest:
            groups.append({"params": self.opt_params[k:], "weight_decay": 0.0})
        if not groups:
            raise ValueError("every parameter is in muon: AdamW needs the others (embeddings, norms, the head)")
        fused = self.opt_params[0].device.type == "cuda"
        self.inner = torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer, int]]:
        """(key, optimizer, offset of its first parameter in ``names``): AdamW, and Muon when it has matrices."""
        out = [("param_groups", self.inner, len(self.names) - sum(len(g["params"]) for g in self.inner.param_groups))]
        if self.muon is not None:
            out.insert(0, ("muon_groups", self.muon, 0))
        return out

    def _optimizer_params(self) -> list[torch.Tensor]:
        return self.params

    @property
    def skipped_steps(self) -> int:
        raise NotImplementedError

    @property
    def loss_scale(self) -> float:
        return 1.0

    def set_lr(self, lr: float) -> None:
        for _, opt, _ in self.optimizers():
            for group in opt.param_groups:
                group["lr"] = lr

    def _step_inner(self) -> None:
        for _, opt, _ in self.optimizers():
            opt.step()

    def zero_grad(self, accumulate: bool = False) -> None:
        """Drop the gradients; ``accumulate``: more than one backward comes before the step."""
        check_type("accumulate", accumulate, bool, "a bool")
        for p in self.params:
            p.grad = None

    # ---------------------------------------------------------------- state
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """AdamW moments, Muon momenta and step counts as ``optim.<key>.<param name>`` tensors."""
        out = {}
        for _, opt, offset in self.optimizers():
            for idx, st in opt.state_dict()["state"].items():
                for key, value in st.items():
                    if not isinstance(value, torch.Tensor):
                        raise TypeError(f"optimizer state {key!r} is not a tensor")
                    out[f"optim.{key}.{self.names[offset + idx]}"] = value.detach().clone()
        return out

    def state_meta(self) -> dict:
        """JSON-able: parameter order, hyper-parameters per group (AdamW's, Muon's), scaler state."""
        meta = {"kind": type(self).__name__, "names": self.names}
        for key, opt, _ in self.optimizers():
            meta[key] = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                         for g in opt.state_dict()["param_groups"]]
        return meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of :meth:`state_tensors` / :meth:`state_meta`."""
        if meta.get("kind") != type(self).__name__:
            raise ValueError(f"checkpoint optimizer is {meta.get('kind')!r}, this run uses {type(self).__name__!r}")
        if meta.get("names") != self.names:
            raise ValueError("checkpoint optimizer parameters differ from this model's parameters")
        if ("muon_groups" in meta) != (self.muon is not None):
            raise ValueError("checkpoint and run disagree on the optimizer (Muon for the matrices or AdamW only)")
        for key, opt, offset in self.optimizers():
            state: dict[int, dict] = {}
            n = sum(len(g["params"]) for g in opt.param_groups)
            for idx, name in enumerate(self.names[offset:offset + n]):
                entry = {k.split(".", 2)[1]: t for k, t in tensors.items()
                         if k.startswith("optim.") and k.split(".", 2)[2] == name}
                if entry:
                    state[idx] = entry
            groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta[key]]
            opt.load_state_dict({"state": state, "param_groups": groups})


class FullPrecisionOptimizer(_AdamWBase):
    """AdamW on fp32 parameters; ``amp_fp16=True`` adds ``torch.amp.GradScaler`` (CUDA)."""

    def __init__(self, named_parameters, *, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, no_decay=frozenset(), muon=frozenset(), muon_rms: float = 0.2,
                 amp_fp16: bool = False):
        super().__init__(named_parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         no_decay=no_decay, muon=muon, muon_rms=muon_rms)
        bad = [n for n, p in zip(self.names, self.params, strict=True) if p.dtype != torch.float32]
        if bad:
            raise TypeError(f"FullPrecisionOptimizer needs fp32 parameters; {bad[:3]} are not")
        self.grad_scaler = torch.amp.GradScaler(self.params[0].device.type) if amp_fp16 else None
        self._skipped = 0

    @property
    def skipped_steps(self) -> int:
        return self._skipped

    @property
    def loss_scale(self) -> float:
        return float(self.grad_scaler.get_scale()) if self.grad_scaler is not None else 1.0

    def zero_grad(self, accumulate: bool = False) -> None:
        """``accumulate``: more than one backward comes before the step.  The gradients then start as zeros the
        optimizer owns and each backward adds into them: a compiled backward replayed from a CUDA graph returns
        its gradients in the graph's memory, which the next micro-batch's replay overwrites.  A parameter no
        micro-batch reaches then steps on a zero gradient (weight decay and its moments act on it, as after
        torch's ``zero_grad(set_to_none=False)``); every parameter of the registry's models gets a gradient."""
        super().zero_grad(accumulate)
        if accumulate:
            for p in self.params:
                p.grad = torch.zeros_like(p)

    def backward(self, loss: torch.Tensor) -> None:
        (self.grad_scaler.scale(loss) if self.grad_scaler is not None else loss).backward()

    def step(self, max_norm: float | None = None) -> StepResult:
        scale = self.loss_scale
        if self.grad_scaler is not None:
            for _, opt, _ in self.optimizers():
                self.grad_scaler.unscale_(opt)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = total_norm(grads)
        found_inf = _agree_found_inf(norm)
        if not found_inf:
            if max_norm is not None:
                clip_(grads, max_norm, norm)
            if self.grad_scaler is not None:
                for _, opt, _ in self.optimizers():
                    self.grad_scaler.step(opt)
            else:
                self._step_inner()
        if self.grad_scaler is not None:
            self.grad_scaler.update()
        self._skipped += int(found_inf)
        return StepResult(found_inf, float(norm.item()) if not found_inf else math.nan, scale)

    def state_meta(self) -> dict:
        meta = super().state_meta()
        meta["skipped_steps"] = self._skipped
        meta["grad_scaler"] = self.grad_scaler.state_dict() if self.grad_scaler is not None else None
        return meta

    def load_state(self, tensors, meta) -> None:
        super().load_state(tensors, meta)
        self._skipped = int(meta["skipped_steps"])
        if (meta["grad_scaler"] is None) != (self.grad_scaler is None):
            raise ValueError("checkpoint and run disagree on fp16 autocast (GradScaler)")
        if self.grad_scaler is not None:
            self.grad_scaler.load_state_dict(meta["grad_scaler"])


class MixedPrecisionOptimizer(_AdamWBase):
    """fp16 parameters, fp32 master weights in AdamW, dynamic loss scaling.

    fp32 parameters (e.g. a recurrence's decay nu and phase omega, which fp16 cannot hold
    near |lambda| = 1) are allowed too: they get an fp32 master like the others and their
    copy back is exact.

    Use: ``zero_grad()``; for each micro-batch ``backward(loss)`` (scales the loss); then
    ``step(max_norm)``, which unscales the fp16 grads into fp32 master grads, skips the
    update on inf/NaN (halving the scale, counting the step), otherwise clips, updates the
    masters and copies them to the fp16 parameters.
    """

    def __init__(self, named_parameters, *, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, no_decay=frozenset(), muon=frozenset(),
                 muon_rms: float = 0.2, loss_scaler: DynamicLossScaler | None = None):
        self.scaler = loss_scaler if loss_scaler is not None else DynamicLossScaler()
        check_type("loss_scaler", self.scaler, DynamicLossScaler, "a DynamicLossScaler")
        super().__init__(named_parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         no_decay=no_decay, muon=muon, muon_rms=muon_rms)

    def _optimizer_params(self) -> list[torch.Tensor]:
        bad = [n for n, p in zip(self.names, self.params, strict=True)
               if p.dtype not in (torch.float16, torch.float32)]
        if bad:
            raise TypeError(f"MixedPrecisionOptimizer needs fp16 (or fp32) parameters; {bad[:3]} are not")
        self._folded = 0  # backward passes accumulated into the master grads since zero_grad
        return [p.detach().float().clone() for p in self.params]

    @property
    def masters(self) -> list[torch.Tensor]:
        return self.opt_params

    @property
    def skipped_steps(self) -> int:
        return self.scaler.skipped_steps

    @property
    def loss_scale(self) -> float:
        return self.scaler.scale

    def zero_grad(self, accumulate: bool = False) -> None:
        super().zero_grad(accumulate)
        for m in self.masters:
            m.grad = None  # a master without a gradient at step time is unused: AdamW leaves it alone
        self._folded = 0

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the scaled loss, its gradients then added into the fp32 master gradients at once, so
        gradient accumulation sums in fp32, never in fp16 ``.grad``, and in memory the optimizer owns: a
        compiled backward replayed from a CUDA graph returns its gradients in the graph's memory, which the
        next micro-batch's forward replay overwrites."""
        (loss.float() * self.scaler.scale).backward()
        self._fold_grads()

    @torch.no_grad()
    def _fold_grads(self) -> None:
        folded = False
        for p, m in zip(self.params, self.masters, strict=True):
            if p.grad is None:
                continue
            if m.grad is None:
                m.grad = p.grad.to(torch.float32, copy=True)  # a copy for an fp32 parameter too
            else:
                m.grad.add_(p.grad)
            p.grad = None
            folded = True
        self._folded += int(folded)

    def step(self, max_norm: float | None = None) -> StepResult:
        scale = self.scaler.scale
        self._fold_grads()  # gradients of a plain loss.backward() the caller made
        with torch.no_grad():
            grads = [m.grad for m in self.masters if m.grad is not None]
            if self._folded > 1 and _distributed():
                # Under DDP's no_sync only the last micro-batch was averaged across ranks; the
                # mean over ranks of (local earlier sum + that shared average) is the global mean.
                world = dist.get_world_size()
                for g in grads:
                    dist.all_reduce(g, op=dist.ReduceOp.SUM)
                    g.div_(world)
            for g in grads:
                g.mul_(1.0 / scale)  # scale is a power of 2: exact
            norm = total_norm(grads)
        found_inf = _agree_found_inf(norm)
        self.scaler.update(found_inf)
        if found_inf:
            return StepResult(True, math.nan, scale)
        with torch.no_grad():
            if max_norm is not None:
                clip_([m.grad for m in self.masters if m.grad is not None], max_norm, norm)
            self._step_inner()
            for p, m in zip(self.params, self.masters, strict=True):
                p.copy_(m)  # the one rounding fp32 -> fp16
        return StepResult(False, float(norm.item()), scale)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = super().state_tensors()
        for name, m in zip(self.names, self.masters, strict=True):
            out[f"master.{name}"] = m.detach().clone()
        return out

    def state_meta(self) -> dict:
        meta = super().state_meta()
        meta["loss_scaler"] = self.scaler.state_dict()
        return meta

    def load_state(self, tensors, meta) -> None:
        super().load_state(tensors, meta)
        with torch.no_grad():
            for name, p, m in zip(self.names, self.params, self.masters, strict=True):
                key = f"master.{name}"
                if key not in tensors:
                    raise ValueError(f"checkpoint has no master weight {key!r}")
                m.copy_(tensors[key])
                p.copy_(m)
        self.scaler.load_state_dict(meta["loss_scaler"])
