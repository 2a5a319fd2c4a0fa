"""Linear layers under the precision policy: complex (block GEMM) and real (for LM heads)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import muse.complex as C
from muse._checks import check_choice, check_float_dtype, check_int, check_type

#: ComplexLinear weight init: "normal" = complex Glorot, each part ~ N(0, 1/(fan_in + fan_out));
#: "uniform" = each part ~ U(-s, s) with s = sqrt(2/(fan_in + fan_out)) (the seed's code).
LINEAR_INITS = ("normal", "uniform")
#: RealLinear init: "default" = nn.Linear's (weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)));
#: "normal" = weight ~ N(0, 0.02), bias 0 (GPT-2's head init).
HEAD_INITS = ("default", "normal")


class ComplexLinear(nn.Module):
    """y = x W^T + b with planar complex ``weight`` (2, out, in) and ``bias`` (2, out).

    Forward is one real GEMM on the block form [x_r, x_i] [[W_r, W_i], [-W_i, W_r]]
    with fp32 accumulation (see :func:`muse.complex.linear`).  ``init`` (see
    :data:`LINEAR_INITS`): "normal" is complex Glorot (Trabelsi et al. 2018), each part
    ~ N(0, 1/(fan_in + fan_out)), so E|w|^2 = 2/(fan_in + fan_out); "uniform" draws each
    part from U(-s, s), s = sqrt(2/(fan_in + fan_out)), so E|w|^2 = (4/3)/(fan_in + fan_out).
    The bias starts at 0.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: torch.dtype = torch.float16, device=None, init: str = "normal"):
        super().__init__()
        self.in_features = check_int("in_features", in_features, min_value=1)
        self.out_features = check_int("out_features", out_features, min_value=1)
        check_type("bias", bias, bool, "a bool")
        self.init = check_choice("init", init, LINEAR_INITS)
        dtype = check_float_dtype("dtype", dtype)
        self.weight = nn.Parameter(torch.empty(2, out_features, in_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(2, out_features, dtype=dtype, device=device)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        fan = self.in_features + self.out_features
        w = torch.empty(self.weight.shape, dtype=torch.float32, device=self.weight.device)
        if self.init == "uniform":
            w.uniform_(-math.sqrt(2.0 / fan), math.sqrt(2.0 / fan))
        else:
            w.normal_(0.0, math.sqrt(1.0 / fan))
        self.weight.copy_(w)
        if self.bias is not None:
            self.bias.zero_()

    @property
    def weight_real(self) -> torch.Tensor:
        return self.weight[0]

    @property
    def weight_imag(self) -> torch.Tensor:
        return self.weight[1]

    def forward(self, x: C.ComplexTensor) -> C.ComplexTensor:
        bias = None if self.bias is None else C.ComplexTensor(self.bias)
        return C.linear(x, C.ComplexTensor(self.weight), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, dtype={self.weight.dtype}, init={self.init}")


#: A :class:`PaddedLinear`'s parameters sit at the start of storages whose output rows are padded to a multiple of this.
ROW_PADDING = 64


def _padded_rows(rows: int) -> int:
    return -(-rows // ROW_PADDING) * ROW_PADDING


class PaddedLinear(nn.Linear):
    """``nn.Linear`` whose weight (out, in) and bias (out,) are the first rows of zero-padded storages
    of :data:`ROW_PADDING`-multiple rows, for LM heads over an unaligned vocabulary.

    A forward without gradient runs the GEMM over the padded rows, writing logits rows of an aligned
    length, and returns the first ``out_features`` columns (a view); with gradient it is the plain
    GEMM.  At a vocabulary of 50,257 the unaligned 16-bit logits rows take a GEMM kernel six times
    slower, and ``torch.compile`` otherwise copies the whole weight into a padded buffer on every
    call.  The padded rows are non-persistent buffers (``weight_rows``, ``bias_rows``) over the
    parameters' storages, so a compiled graph takes them as inputs of their real size (inductor's
    GEMM autotuning remakes its inputs at their nominal size: a view past a parameter's end broke
    ``mode="max-autotune"``).  The parameters keep their shapes, so the parameter count and
    checkpoints are nn.Linear's; module conversions (``.to``), state-dict loads (also
    ``assign=True``), pickling and copies keep the padding.  Setting ``.data`` of a parameter by
    hand drops it: the eager forward then takes the plain GEMM, a compiled one would still read the
    old rows, so call :meth:`pad_storage` after.  The GEMM is ``F.linear`` (autocast applies, as in
    nn.Linear); :class:`RealLinear` puts it under the precision policy.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.pad_storage()

    def _storage_padded(self, p: torch.Tensor) -> bool:
        rows = _padded_rows(self.out_features)
        return (p.is_contiguous() and p.storage_offset() == 0
                and p.untyped_storage().nbytes() >= rows * (p.numel() // p.shape[0]) * p.element_size())

    @torch.no_grad()
    def pad_storage(self) -> None:
        """Move the weight and bias to the start of zero-padded storages where they are not already, and
        point ``weight_rows`` / ``bias_rows`` at the padded rows."""
        for name in ("weight", "bias"):
            p = getattr(self, name)
            if p is not None and not self._storage_padded(p):
                base = torch.zeros((_padded_rows(p.shape[0]), *p.shape[1:]), dtype=p.dtype, device=p.device)
                base[: p.shape[0]].copy_(p)
                p.data = base[: p.shape[0]]
            rows = None if p is None else p.detach().as_strided((_padded_rows(p.shape[0]), *p.shape[1:]), p.stride())
            self.register_buffer(f"{name}_rows", rows, persistent=False)

    def _rows_current(self) -> bool:
        """Whether ``weight_rows`` / ``bias_rows`` are still the padded storages of the parameters."""
        return all(self._storage_padded(p) and r is not None and r.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
                   for p, r in ((self.weight, self.weight_rows), (self.bias, self.bias_rows)) if p is not None)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.pad_storage()
        return out

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.pad_storage()

    def __setstate__(self, state):
        super().__setstate__(state)
        self.pad_storage()

    def gemm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``x @ weight.T + bias``: the one GEMM of :meth:`forward` (padded or not)."""
        return F.linear(x, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, b))
        if grad or _padded_rows(self.out_features) == self.out_features or not (
                torch.compiler.is_compiling() or self._rows_current()):
            return self.gemm(x, w, b)
        return self.gemm(x, self.weight_rows, self.bias_rows)[..., : self.out_features]


class RealLinear(PaddedLinear):
    """A :class:`PaddedLinear` whose GEMM follows the policy: fp32 accumulation, one rounding to x.dtype;
    the input must be a tensor in the layer's dtype with ``in_features`` features.

    ``init`` (see :data:`HEAD_INITS`): "default" keeps nn.Linear's init, "normal" draws the
    weight from N(0, 0.02) and zeroes the bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, init: str = "default"):
        self.init = check_choice("init", init, HEAD_INITS)  # read by reset_parameters below
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.init == "default":
            super().reset_parameters()
            return
        self.weight.copy_(torch.randn(self.weight.shape, device=self.weight.device) * 0.02)
        if self.bias is not None:
            self.bias.zero_()

    def gemm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return C.gemm_linear(x, weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_head_input(x, self.in_features, self.weight.dtype)
        return super().forward(x)


def check_head_input(x: object, in_features: int, dtype: torch.dtype) -> None:
    """The input checks of a real head (:class:`RealLinear`, ``TiedRealHead``): a tensor with
    ``in_features`` in its last dim, in the head's ``dtype``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x must have {in_features} features in its last dim, got shape {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"x has dtype {x.dtype} but the layer holds {dtype}")
