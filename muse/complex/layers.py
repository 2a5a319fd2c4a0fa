"""Functional forms of the complex layers: layer_norm, modrelu, dropout, embedding.

``layer_norm`` and ``modrelu`` are custom autograd functions: the forward computes in
fp32 and rounds once; only the fp16 input is saved, and the backward recomputes the
statistics from it (less memory, and the backward is itself differentiable, so
double backward works).  Their outputs are remembered as recomputable from that input
(``recompute.remember``), so a GEMM that consumes one keeps the input, not the output.  The gradient convention is PyTorch's: for real L,
grad = dL/dRe + i dL/dIm.  Where ``muse.kernels.use_kernel`` picks it (float16 planes on
CUDA, or Triton's interpreter), forward and backward run one Triton kernel each; the
PyTorch code here is the reference and the fallback.  A backward that must itself be
differentiable (``create_graph=True``) always takes the PyTorch path.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from muse import kernels
from muse._checks import (
    check_choice,
    check_float,
    check_float_tensor,
    check_int,
    check_probability,
    check_real_tensor,
    check_same_device,
    check_tensor,
    check_token_range,
    check_type,
)
from muse.complex import recompute
from muse.complex._policy import compute_dtype, magnitude
from muse.complex.ops import add
from muse.complex.tensor import ComplexTensor


def _sum_rows(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dim but the last: (..., d) -> (d,)."""
    return t.reshape(-1, t.shape[-1]).sum(dim=0)


# ------------------------------------------------------------------ layer norm
def _ln_stats(x: torch.Tensor, eps: float):
    """Complex mean and 1/sqrt(E|z - mu|^2 + eps) over the last dim of planes (2, ..., d)."""
    mu = x.mean(dim=-1, keepdim=True)  # (2, ..., 1) complex mean
    c = x - mu
    var = (c * c).sum(dim=0).mean(dim=-1, keepdim=True)  # (..., 1) E|z - mu|^2
    return c, torch.rsqrt(var + eps)


class _LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, weight, bias, eps):
        ctx.save_for_backward(planes, weight, bias)
        ctx.eps = eps
        if kernels.use_kernel(planes, weight, bias, op="layer_norm"):
            return kernels.layer_norm_fwd(planes, weight, bias, eps)
        cd = compute_dtype(planes.dtype)
        c, rstd = _ln_stats(planes.to(cd), eps)
        n = c * rstd
        out = n if weight is None else n * weight.to(cd)
        if bias is not None:
            out = torch.stack((out[0] + bias.to(cd), out[1]))
        return out.to(planes.dtype)

    @staticmethod
    def backward(ctx, grad):
        planes, weight, bias = ctx.saved_tensors
        if not torch.is_grad_enabled() and kernels.use_kernel(planes, weight, bias, grad, op="layer_norm"):
            dtypes = {t.dtype for t in (weight, bias) if t is not None}
            # one parameter dtype: both rows rounded once to it by the kernel that sums them
            grad_x, sums = kernels.layer_norm_bwd(planes, weight, grad, ctx.eps,
                                                  dtypes.pop() if len(dtypes) == 1 else torch.float32)
            grad_w = None if weight is None else sums[0].to(weight.dtype)
            grad_b = None if bias is None else sums[1].to(bias.dtype)
            return grad_x, grad_w, grad_b, None
        cd = compute_dtype(planes.dtype)
        c, rstd = _ln_stats(planes.to(cd), ctx.eps)
        n = c * rstd
        g = grad.to(cd)
        h = g if weight is None else g * weight.to(cd)
        grad_w = None if weight is None else _sum_rows(g * n).to(weight.dtype)
        grad_b = None if bias is None else _sum_rows(g[0]).to(bias.dtype)
        m2 = (h * n).sum(dim=0).mean(dim=-1, keepdim=True)  # (..., 1): mean_k <h_k, n_k>
        grad_x = rstd * (h - h.mean(dim=-1, keepdim=True) - n * m2)
        return grad_x.to(planes.dtype), grad_w, grad_b, None


def layer_norm(
    z: ComplexTensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    residual: ComplexTensor | None = None,
    nonfinite_input: tuple[torch.Tensor, int] | None = None,
) -> ComplexTensor:
    """Complex LayerNorm over the last dim, per sample: (z - mu) / sqrt(E|z - mu|^2 + eps) * w + b.

    ``mu`` is the complex mean; ``weight`` (real, d) scales both parts; ``bias`` (real, d)
    shifts the real part, as in the seed model.  No statistic crosses samples.  With ``residual``
    (z's shape and dtype) it normalises ``add(z, residual)``, the sum rounded once as ``add`` rounds
    it: a post-norm residual connection.  Where no gradient is needed and the kernel is picked, one
    pass reads both and the sum is never written (the same values as the two ops, bit for bit).
    ``nonfinite_input`` = (flags, slot), as :func:`layer_norm_pair` takes it: flags[slot] is set to 1
    where a value of z is not finite (a model's count of its first activations, in the norm's own pass
    where no gradient is needed, no residual is given and the kernel is picked).
    """
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    if residual is not None:
        _check_residual(z, residual, "a ComplexTensor or None")
    _check_layer_norm_args(z, weight, bias)
    eps = check_float("eps", eps, min_value=0.0, min_inclusive=False)
    flags, slot = _check_flags(z, nonfinite_input)
    if flags is not None:
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (z.planes, weight, bias))
        if residual is None and not grad and kernels.use_kernel(z.planes, weight, bias, op="layer_norm"):
            return ComplexTensor(kernels.layer_norm_flag_fwd(z.planes, weight, bias, eps, flags, slot))
        _flag_nonfinite(flags, slot, z.planes)
    if residual is not None:
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                               for t in (z.planes, residual.planes, weight, bias))
        if not grad and kernels.use_kernel(z.planes, residual.planes, weight, bias, op="layer_norm"):
            return ComplexTensor(kernels.add_layer_norm_fwd(z.planes, residual.planes, weight, bias, eps))
        z = add(z, residual)
    out = _LayerNormFn.apply(z.planes, weight, bias, eps)
    return ComplexTensor(recompute.remember(out, _LayerNormFn.apply, z.planes, weight, bias, eps))


def layer_norm_pair(
    z: ComplexTensor,
    residual: ComplexTensor,
    first: tuple[torch.Tensor | None, torch.Tensor | None, float],
    second: tuple[torch.Tensor | None, torch.Tensor | None, float],
    nonfinite: tuple[torch.Tensor, int] | None = None,
) -> tuple[ComplexTensor, ComplexTensor]:
    """(y, LN_second(y)) with y = LN_first(z + residual); ``first`` and ``second`` are (weight, bias, eps).

    A post-norm block's output and the next block's pre-norm of it (or the final norm): the values of
    two :func:`layer_norm` calls, bit for bit.  Where no gradient is needed and the kernel is picked, one
    pass computes both from registers, so y is written but never read back.  ``nonfinite`` = (flags, slot),
    flags an int32 (n,) tensor on z's device: flags[slot] is set to 1 where a value of y is not finite (a
    model's per-stage count, taken in the same pass); it is left as it was otherwise.
    """
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    _check_residual(z, residual, "a ComplexTensor")
    (w1, b1, eps1), (w2, b2, eps2) = first, second
    _check_layer_norm_args(z, w1, b1)
    _check_layer_norm_args(z, w2, b2)
    eps1 = check_float("eps", eps1, min_value=0.0, min_inclusive=False)
    eps2 = check_float("eps", eps2, min_value=0.0, min_inclusive=False)
    flags, slot = _check_flags(z, nonfinite)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                           for t in (z.planes, residual.planes, w1, b1, w2, b2))
    if not grad and kernels.use_kernel(z.planes, residual.planes, w1, b1, w2, b2, op="layer_norm"):
        y, y2 = kernels.add_layer_norm_pair_fwd(z.planes, residual.planes, w1, b1, eps1, w2, b2, eps2, flags, slot)
        return ComplexTensor(y), ComplexTensor(y2)
    y = layer_norm(z, w1, b1, eps1, residual=residual)
    if flags is not None:
        _flag_nonfinite(flags, slot, y.planes)
    return y, layer_norm(y, w2, b2, eps2)


def _check_flags(z: ComplexTensor, nonfinite: object) -> tuple[torch.Tensor | None, int]:
    """(flags, slot) of a ``nonfinite`` argument, or (None, 0): flags a 1-D int32 tensor on z's device, slot
    an int below its length."""
    if nonfinite is None:
        return None, 0
    if not isinstance(nonfinite, tuple) or len(nonfinite) != 2:
        raise TypeError(f"nonfinite must be a (flags, slot) tuple or None, got {type(nonfinite).__name__}")
    flags, slot = nonfinite
    check_tensor("flags", flags)
    if flags.dtype != torch.int32 or flags.dim() != 1:
        raise TypeError(f"flags must be a 1-D torch.int32 tensor, got {flags.dtype} with {flags.dim()} dims")
    check_same_device([("z", z.device), ("flags", flags.device)])
    check_int("slot", slot, min_value=0)
    if slot >= flags.numel():
        raise ValueError(f"slot must be below flags' length {flags.numel()}, got {slot}")
    return flags, slot


@torch.no_grad()
def _flag_nonfinite(flags: torch.Tensor, slot: int, values: torch.Tensor) -> None:
    """flags[slot] = 1 where a value of ``values`` is not finite (left as it was otherwise)."""
    flags[slot] = torch.maximum(flags[slot], (~torch.isfinite(values)).any().to(torch.int32))


def _check_residual(z: ComplexTensor, residual: object, expected: str) -> None:
    """``residual`` is a ComplexTensor of z's shape, dtype and device (``expected`` names it in the TypeError)."""
    check_type("residual", residual, ComplexTensor, expected)
    if residual.shape != z.shape or residual.dtype != z.dtype:
        raise ValueError(f"residual must match z's shape {tuple(z.shape)} and dtype {z.dtype}, "
                         f"got {tuple(residual.shape)} and {residual.dtype}")
    check_same_device([("z", z.device), ("residual", residual.device)])


def _check_layer_norm_args(z: ComplexTensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    """z has a dim to normalise over; weight and bias, where given, are float (d,) tensors on z's device."""
    if z.dim() == 0:
        raise ValueError("z must have at least one dim to normalise over")
    d = z.shape[-1]
    named = [("z", z.device)]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        check_float_tensor(name, t)
        if tuple(t.shape) != (d,):
            raise ValueError(f"{name} must have shape ({d},) to match z's last dim, got {tuple(t.shape)}")
        named.append((name, t.device))
    check_same_device(named)


# ---------------------------------------------------------------------- modReLU
def _modrelu_parts(x: torch.Tensor, bias: torch.Tensor, storage: torch.dtype):
    re, im = x[0], x[1]
    r = magnitude(re, im, storage)
    nonzero = r > 0
    r_safe = torch.where(nonzero, r, torch.ones_like(r))  # zero guard: 1 is exact in every format
    b = bias.to(x.dtype)
    active = nonzero & ~(r + b <= 0)  # a NaN bias counts as active, so it propagates
    return r, r_safe, b, active


class _ModReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes, bias):
        ctx.save_for_backward(planes, bias)
        if kernels.use_kernel(planes, bias, op="modrelu"):
            return kernels.modrelu_fwd(planes, bias)
        cd = compute_dtype(planes.dtype)
        x = planes.to(cd)
        r, r_safe, b, active = _modrelu_parts(x, bias, planes.dtype)
        scale = torch.where(active, (r + b) / r_safe, torch.zeros_like(r))
        return (x * scale).to(planes.dtype)

    @staticmethod
    def backward(ctx, grad):
        planes, bias = ctx.saved_tensors
        if not torch.is_grad_enabled() and kernels.use_kernel(planes, bias, grad, op="modrelu"):
            return kernels.modrelu_bwd(planes, bias, grad)
        cd = compute_dtype(planes.dtype)
        double = torch.is_grad_enabled()  # a differentiable backward: no in-place ops on its graph
        x = planes.to(cd, copy=not double)  # reused in place below: temporaries of two planes, not ten
        _, r_safe, b, active = _modrelu_parts(x, bias, planes.dtype)
        g = grad.to(cd)
        # f(z) = z + b u on the active set (u = z/|z|): J^T g = g + (b/r)(g - u Re(conj(u) g)); in place,
        # the same operations in the same order
        if double:
            u = x / r_safe
            ug = (u * g).sum(dim=0)
            gx = torch.where(active, g + (b / r_safe) * (g - u * ug), 0.0)
            gb = torch.where(active, ug, 0.0)
        else:
            u = x.div_(r_safe)
            ug = (u * g).sum(dim=0)
            gx = u.mul_(ug).neg_().add_(g).mul_(b / r_safe).add_(g).masked_fill_(~active, 0.0)
            gb = ug.masked_fill_(~active, 0.0)
        gb = gb.sum() if bias.dim() == 0 else _sum_rows(gb)
        return gx.to(planes.dtype), gb.to(bias.dtype)


def modrelu(z: ComplexTensor, bias: torch.Tensor) -> ComplexTensor:
    """modReLU (Arjovsky et al. 2016): ReLU(|z| + b) * z / |z|, and 0 at z = 0.

    The phase is kept; ``bias`` is real, broadcast over the last dim.  At z = 0 the
    output and both gradients are 0 (the function is not differentiable there).
    """
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    check_float_tensor("bias", bias)
    if bias.dim() > 1 or (bias.dim() == 1 and (z.dim() == 0 or bias.shape[0] != z.shape[-1])):
        raise ValueError(
            f"bias must be 0-d or have shape ({z.shape[-1] if z.dim() else 1},), got {tuple(bias.shape)}"
        )
    check_same_device([("z", z.device), ("bias", bias.device)])
    return ComplexTensor(recompute.remember(_ModReLUFn.apply(z.planes, bias), _ModReLUFn.apply, z.planes, bias))


# ---------------------------------------------------------------------- dropout
#: ``"shared"``: one mask per complex entry (both parts dropped together);
#: ``"independent"``: one mask per part (the real and imaginary planes drop separately).
DROPOUT_MODES = ("shared", "independent")


def dropout(
    z: ComplexTensor,
    p: float = 0.5,
    training: bool = True,
    generator: torch.Generator | None = None,
    mode: str = "shared",
) -> ComplexTensor:
    """Complex dropout with probability ``p``: survivors scaled by 1/(1-p) in fp32, rounded once.

    ``mode`` (see :data:`DROPOUT_MODES`) says whether a whole complex entry is dropped
    (``"shared"``) or each part on its own (``"independent"``).
    """
    check_type("z", z, ComplexTensor, "a ComplexTensor")
    p = check_probability("p", p)
    check_choice("mode", mode, DROPOUT_MODES)
    if not training or p == 0.0:
        return z
    cd = compute_dtype(z.dtype)
    shape = z.planes.shape if mode == "independent" else z.shape
    keep = torch.empty(shape, dtype=cd, device=z.device).bernoulli_(1.0 - p, generator=generator)
    return ComplexTensor(_DropoutFn.apply(z.planes, keep.to(torch.bool), p))


_BITS = (1, 2, 4, 8, 16, 32, 64, 128)


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor -> uint8, eight entries a byte (zero-padded at the end)."""
    flat = mask.reshape(-1)
    flat = torch.cat((flat, flat.new_zeros(-flat.numel() % 8)))
    bits = torch.tensor(_BITS, dtype=torch.uint8, device=mask.device)
    return (flat.view(-1, 8).to(torch.uint8) * bits).sum(dim=-1, dtype=torch.uint8)


def _unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`_pack_bits`: the bool tensor of ``shape``."""
    bits = torch.tensor(_BITS, dtype=torch.uint8, device=packed.device)
    flat = (packed[:, None] & bits).ne(0).reshape(-1)
    return flat[:shape.numel()].reshape(shape)


class _DropoutFn(torch.autograd.Function):
    """planes * keep / (1 - p) in the compute dtype, rounded once; saves the mask as bits (1/8 byte per
    entry instead of the 4 of an fp32 scale tensor) and rebuilds the same fp32 factor in backward."""

    @staticmethod
    def _factor(keep: torch.Tensor, p: float, cd: torch.dtype) -> torch.Tensor:
        return keep.to(cd) / (1.0 - p)

    @staticmethod
    def forward(ctx, planes, keep, p):
        cd = compute_dtype(planes.dtype)
        ctx.save_for_backward(_pack_bits(keep))
        ctx.p, ctx.shape = p, keep.shape
        return (planes.to(cd) * _DropoutFn._factor(keep, p, cd)).to(planes.dtype)

    @staticmethod
    def backward(ctx, grad):
        (packed,) = ctx.saved_tensors
        cd = compute_dtype(grad.dtype)
        keep = _unpack_bits(packed, ctx.shape)
        return (grad.to(cd) * _DropoutFn._factor(keep, ctx.p, cd)).to(grad.dtype), None, None


# -------------------------------------------------------------------- embedding
class _EmbeddingRowsFn(torch.autograd.Function):
    """``F.embedding(ids, table)`` whose backward sums each row's gradients in the compute dtype and rounds them
    once into a gradient of the table's dtype, with no table-sized buffer in the compute dtype: torch's
    ``embedding_dense_backward`` (and inductor's form of it) fills a float32 (rows, d) buffer, scatters into it
    and casts the whole of it, three passes over a table of 50,257 x 2 rows where only B*S rows change."""

    @staticmethod
    def forward(ctx, ids, table):
        ctx.save_for_backward(ids)
        ctx.rows, ctx.dtype = table.shape[0], table.dtype
        return F.embedding(ids, table)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        d = grad.shape[-1]
        flat, order = ids.reshape(-1).sort()
        first = torch.ones_like(flat, dtype=torch.bool)
        first[1:] = flat[1:] != flat[:-1]
        segment = first.cumsum(0) - 1  # per sorted entry: which distinct id it is, 0, 1, ...
        slot = torch.empty_like(segment).scatter_(0, order, segment)  # the same, per entry in ids' order
        g = grad.reshape(-1, d)
        sums = torch.zeros_like(g, dtype=compute_dtype(ctx.dtype)).index_add_(0, slot, g.to(compute_dtype(ctx.dtype)))
        rows = torch.where(first[:, None], sums.to(ctx.dtype)[segment], 0.0)  # one rounding; a repeated id's later entries 0
        out = grad.new_zeros((ctx.rows, d), dtype=ctx.dtype).index_put_((flat,), rows, accumulate=True)
        return None, out  # (each row: its rounded sum + zeros, exact; and the backward is differentiable)


def embedding(
    ids: torch.Tensor,
    weight: ComplexTensor | torch.Tensor,
    position: torch.Tensor | None = None,
    phase: float | None = None,
) -> ComplexTensor:
    """Look up complex rows: ``(weight[ids] + position) * e^{i phase}``, rounded once.

    ``weight`` is (vocab, d): a ComplexTensor, or a real floating tensor whose rows are tokens on
    the real axis (imaginary part 0, so one plane of storage); ``position`` (optional, real, (seq, d)
    or broadcastable to ids.shape + (d,)) is added to the real part; ``phase`` (optional) rotates every
    entry.  ``ids`` may have any integer dtype and shape; an id outside [0, vocab) is a ValueError
    (torch indexing would read row ``vocab + id`` for a negative id).
    """
    check_tensor("ids", ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
    if isinstance(weight, torch.Tensor):
        check_real_tensor("weight", weight)
    else:
        check_type("weight", weight, ComplexTensor, "a ComplexTensor or a real floating tensor")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (vocab, d), got shape {tuple(weight.shape)}")
    named = [("ids", ids.device), ("weight", weight.device)]
    if position is not None:
        check_float_tensor("position", position)
        named.append(("position", position.device))
    check_same_device(named)
    if phase is not None and (isinstance(phase, bool) or not isinstance(phase, numbers.Real)):
        raise TypeError(f"phase must be a real number or None, got {type(phase).__name__}")
    ids = check_token_range("ids", ids.long(), weight.shape[0])
    return embedding_unchecked(ids, weight, position, phase)


def embedding_unchecked(ids: torch.Tensor, weight: ComplexTensor | torch.Tensor, position: torch.Tensor | None = None,
                        phase: float | None = None) -> ComplexTensor:
    """:func:`embedding` for callers that checked its arguments: int64 ``ids`` in [0, vocab), a (vocab, d)
    ``weight`` (a ComplexTensor or a real table), ``position`` and ``phase`` as :func:`embedding` takes them, all
    on one device.  The id range check is the one that reads values (a host sync in eager code, a device assert in
    compiled code), so a module that checks its ids under its own argument name does not pay for it twice."""
    v, d = weight.shape
    real_table = isinstance(weight, torch.Tensor)
    # planes (2, V, d) as 2V rows: one lookup over ids and ids + V, so the backward is one (2V, d) gradient
    # (fp32 sums of the looked-up rows, one rounding) instead of indexing's zeros + out-of-place index_put (two
    # weight-sized tensors alive at once). Eager CUDA keeps torch's backward, which sums in fp32 per id without a
    # table-sized buffer; compiled code (inductor's form of it holds one in fp32) and the CPU (its fp16 backward
    # accumulates in fp16) take _EmbeddingRowsFn
    if real_table:
        lookup, table = ids, weight
    else:
        lookup, table = torch.stack((ids, ids + v)), weight.planes.reshape(2 * v, d)
    if table.is_cuda and not torch.compiler.is_compiling():
        rows = F.embedding(lookup, table)  # (2, *ids.shape, d), or (*ids.shape, d) from a real table
    else:
        rows = _EmbeddingRowsFn.apply(lookup, table)
    if position is None and phase is None:
        return ComplexTensor(torch.stack((rows, torch.zeros_like(rows))) if real_table else rows)
    cd = compute_dtype(weight.dtype)
    re = rows.to(cd) if real_table else rows[0].to(cd)
    if position is not None:
        re = re + position.to(cd)
    if real_table:  # the complex case with a zero imaginary plane, without reading one
        re, im = (re, torch.zeros_like(re)) if phase is None else (re * math.cos(phase), re * math.sin(phase))
        return ComplexTensor(torch.stack((re, im)).to(weight.dtype))
    im = rows[1].to(cd)
    if phase is not None:
        c, s = math.cos(phase), math.sin(phase)
        re, im = re * c - im * s, re * s + im * c
    return ComplexTensor(torch.stack((re, im)).to(weight.dtype))
