"""The Triton kernels (imported only when the switch picks a kernel, so Triton stays optional).

Layout: planes (2, n_rows, d) contiguous, ``plane`` = n_rows * d elements apart.  A program
takes a tile of ``ROWS`` rows by ``BLOCK_D`` >= d columns, loads both planes once, computes
in fp32 and rounds once.  Backward kernels loop over row tiles (a grid of a few programs
per SM) and write one fp32 row of parameter-gradient partial sums per program.
Division and square root are the IEEE (round-to-nearest) forms, as in PyTorch, so the
bounds of docs/numerics.md hold unchanged.

Triton fixes interpreter or GPU mode when it is first imported: ``TRITON_INTERPRET=1`` must
be set before the process imports Triton (the test plugin does this on machines without a GPU).
"""

import functools
import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from muse.kernels import SELECTIVE_TILE, interpreting
from muse.kernels.scratch import scratch

#: Launch shape of each element-wise kernel: (elements per plane in a tile, num_warps), and for the
#: persistent backward kernels the programs per SM.  The fastest of ``scripts/kernel_sweep.py``'s grid
#: on the H200 at 4096 rows of d = 512 (docs/performance.md, eleventh session); small tiles and many
#: programs in flight win, as the ops are bound by memory latency at this size.
TILES = {"layer_norm_fwd": (1024, 1), "layer_norm_bwd": (512, 1), "modrelu_fwd": (512, 4), "modrelu_bwd": (512, 4),
         "sum_rows": (4096, 2)}
PROGRAMS_PER_SM = {"layer_norm_bwd": 8, "modrelu_bwd": 8, "sum_rows": 4}


def _tile(d: int, kernel: str) -> tuple[int, int, int]:
    """(ROWS, BLOCK_D, num_warps) of ``kernel`` (a key of TILES): whole rows, about the set number of
    elements per plane (at least one row), and enough warps that a thread holds at most 16 elements of
    a row per plane."""
    elements, warps = TILES[kernel]
    block_d = triton.next_power_of_2(max(d, 1))
    rows = max(1, min(16, elements // block_d))
    return rows, block_d, max(warps, min(8, block_d // 512))


@functools.cache
def _sm_count(index: int) -> int:
    """Streaming multiprocessors of CUDA device ``index`` (cached: the query costs ~7 µs of host time a call)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sms(device: torch.device) -> int:
    return _sm_count(torch.cuda.current_device() if device.index is None else device.index)


def _programs(device: torch.device, tiles: int, kernel: str) -> int:
    """Grid of a persistent backward kernel: PROGRAMS_PER_SM[kernel] per SM (4 programs under the interpreter)."""
    if device.type == "cuda" and not interpreting():
        sms = _sms(device)
        return max(1, min(tiles, PROGRAMS_PER_SM[kernel] * sms))
    return max(1, min(tiles, 4))


# ------------------------------------------------------------------ layer norm
@triton.jit
def _ln_rows(re, im, mask, cols, d, eps, w_ptr, b_ptr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """The normalised fp32 planes of fp32 rows (re, im): complex mean, E|z - mu|^2, weight, real bias."""
    c_re = tl.where(mask, re - (tl.sum(re, axis=1) / d)[:, None], 0.0)
    c_im = tl.where(mask, im - (tl.sum(im, axis=1) / d)[:, None], 0.0)
    var = tl.sum(c_re * c_re + c_im * c_im, axis=1) / d
    rstd = tl.math.div_rn(1.0, tl.math.sqrt_rn(var + eps))[:, None]
    y_re = c_re * rstd
    y_im = c_im * rstd
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=cols < d, other=0.0).to(tl.float32)
        y_re = y_re * w
        y_im = y_im * w
    if HAS_B:
        y_re = y_re + tl.load(b_ptr + cols, mask=cols < d, other=0.0).to(tl.float32)
    return y_re, y_im


@triton.jit
def _flag_nonfinite(flag_ptr, re, im, mask):
    """The int32 at flag_ptr becomes 1 where a masked value of the planes (re, im) is not finite."""
    a_re = tl.abs(re.to(tl.float32))
    a_im = tl.abs(im.to(tl.float32))
    bad = mask & ~((a_re < float("inf")) & (a_im < float("inf")))  # NaN compares false: counted
    if tl.max(bad.to(tl.int32)) > 0:
        tl.atomic_max(flag_ptr, 1)


@triton.jit
def _ln_forward_kernel(x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, w2_ptr, b2_ptr, y2_ptr, flag_ptr, n_rows, d, plane, eps, eps2,
                       HAS_R: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, PAIR: tl.constexpr,
                       HAS_W2: tl.constexpr, HAS_B2: tl.constexpr, FLAG: tl.constexpr, FLAG_X: tl.constexpr,
                       ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """y = LN(x), or with HAS_R y = LN(x + r), the sum rounded once to x's dtype first (as ``C.add`` rounds it);
    with PAIR also y2 = LN2(y) of the rounded y (weights w2, b2), which is never read back; with FLAG the int32
    at flag_ptr becomes 1 where a stored y is not finite, with FLAG_X where a value of x is."""
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_D)[None, :]
    mask = (rows < n_rows) & (cols < d)
    off = rows * d + cols
    re = tl.load(x_ptr + off, mask=mask, other=0.0)
    im = tl.load(x_ptr + plane + off, mask=mask, other=0.0)
    if FLAG_X:
        _flag_nonfinite(flag_ptr, re, im, mask)
    if HAS_R:
        re = (re.to(tl.float32) + tl.load(r_ptr + off, mask=mask, other=0.0).to(tl.float32)).to(x_ptr.dtype.element_ty)
        im = (im.to(tl.float32) + tl.load(r_ptr + plane + off, mask=mask, other=0.0).to(tl.float32)).to(x_ptr.dtype.element_ty)
    y_re, y_im = _ln_rows(re.to(tl.float32), im.to(tl.float32), mask, cols, d, eps, w_ptr, b_ptr, HAS_W, HAS_B)
    y_re = y_re.to(y_ptr.dtype.element_ty)
    y_im = y_im.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + off, y_re, mask=mask)
    tl.store(y_ptr + plane + off, y_im, mask=mask)
    if FLAG:
        _flag_nonfinite(flag_ptr, y_re, y_im, mask)
    if PAIR:
        y2_re, y2_im = _ln_rows(tl.where(mask, y_re.to(tl.float32), 0.0), tl.where(mask, y_im.to(tl.float32), 0.0),
                                mask, cols, d, eps2, w2_ptr, b2_ptr, HAS_W2, HAS_B2)
        tl.store(y2_ptr + off, y2_re.to(y2_ptr.dtype.element_ty), mask=mask)
        tl.store(y2_ptr + plane + off, y2_im.to(y2_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _row_tile(tile, n_rows, d, cols, cmask, ROWS: tl.constexpr):
    """(mask, offsets) of row tile ``tile``: masked out entirely past the last row."""
    rows = (tile * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    return (rows < n_rows) & cmask, rows * d + cols


@triton.jit
def _load_pair(x_ptr, g_ptr, off, mask, plane):
    """Both planes of x and of g at ``off``, as stored (fp16)."""
    return (tl.load(x_ptr + off, mask=mask, other=0.0), tl.load(x_ptr + plane + off, mask=mask, other=0.0),
            tl.load(g_ptr + off, mask=mask, other=0.0), tl.load(g_ptr + plane + off, mask=mask, other=0.0))


@triton.jit
def _ln_backward_kernel(x_ptr, w_ptr, g_ptr, dx_ptr, part_ptr, n_rows, d, plane, eps, n_tiles, n_progs,
                        HAS_W: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)[None, :]
    cmask = cols < d
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    acc_w = tl.zeros((BLOCK_D,), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_D,), dtype=tl.float32)
    tile = pid
    mask, off = _row_tile(tile, n_rows, d, cols, cmask, ROWS)
    xr, xi, gr, gi = _load_pair(x_ptr, g_ptr, off, mask, plane)
    while tile < n_tiles:  # tiles pid, pid + n_progs, ...
        mask, off = _row_tile(tile, n_rows, d, cols, cmask, ROWS)
        nxt = tile + n_progs
        n_mask, n_off = _row_tile(nxt, n_rows, d, cols, cmask, ROWS)
        # the next tile's loads in flight while this one computes (3-6 % faster on the H200)
        pxr, pxi, pgr, pgi = _load_pair(x_ptr, g_ptr, n_off, n_mask, plane)
        re = xr.to(tl.float32)
        im = xi.to(tl.float32)
        c_re = tl.where(mask, re - (tl.sum(re, axis=1) / d)[:, None], 0.0)
        c_im = tl.where(mask, im - (tl.sum(im, axis=1) / d)[:, None], 0.0)
        var = tl.sum(c_re * c_re + c_im * c_im, axis=1) / d
        rstd = tl.math.div_rn(1.0, tl.math.sqrt_rn(var + eps))[:, None]
        n_re = c_re * rstd
        n_im = c_im * rstd
        g_re = gr.to(tl.float32)
        g_im = gi.to(tl.float32)
        acc_w += tl.sum(g_re * n_re + g_im * n_im, axis=0)
        acc_b += tl.sum(g_re, axis=0)
        h_re = g_re
        h_im = g_im
        if HAS_W:
            h_re = g_re * w
            h_im = g_im * w
        m2 = (tl.sum(h_re * n_re + h_im * n_im, axis=1) / d)[:, None]
        dx_re = rstd * (h_re - (tl.sum(h_re, axis=1) / d)[:, None] - n_re * m2)
        dx_im = rstd * (h_im - (tl.sum(h_im, axis=1) / d)[:, None] - n_im * m2)
        tl.store(dx_ptr + off, dx_re.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(dx_ptr + plane + off, dx_im.to(dx_ptr.dtype.element_ty), mask=mask)
        xr, xi, gr, gi = pxr, pxi, pgr, pgi
        tile = nxt
    pcols = tl.arange(0, BLOCK_D)
    tl.store(part_ptr + pid * 2 * d + pcols, acc_w, mask=pcols < d)
    tl.store(part_ptr + pid * 2 * d + d + pcols, acc_b, mask=pcols < d)


def _rows(planes: torch.Tensor) -> tuple[int, int]:
    d = planes.shape[-1] if planes.dim() > 1 else 1
    return planes[0].numel() // max(d, 1), d


def layer_norm_forward(planes: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                       eps: float, residual: torch.Tensor | None = None, flags: torch.Tensor | None = None,
                       slot: int = 0) -> torch.Tensor:
    """LN(planes), or LN(planes + residual) with the sum rounded once and never written; flags[slot] (int32)
    becomes 1 where a value of ``planes`` is not finite."""
    return _ln_forward(planes, residual, weight, bias, eps, flags=flags, slot=slot, flag_input=True)[0]


def layer_norm_pair_forward(planes: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor | None,
                            bias: torch.Tensor | None, eps: float, weight2: torch.Tensor | None,
                            bias2: torch.Tensor | None, eps2: float, flags: torch.Tensor | None = None,
                            slot: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, y2): y = LN(planes + residual) as :func:`layer_norm_forward` writes it, and y2 = LN2(y) from the
    rounded y in registers (the same values as a second call reading y back); flags[slot] (int32) becomes 1
    where a value of y is not finite."""
    return _ln_forward(planes, residual, weight, bias, eps, (weight2, bias2, eps2), flags, slot)


def _ln_forward(planes, residual, weight, bias, eps, second=None, flags=None, slot=0, flag_input=False):
    x = scratch(planes.contiguous(), planes)
    r = x if residual is None else scratch(residual.contiguous(), residual)
    n_rows, d = _rows(x)
    y = scratch(torch.empty_like(x))
    y2 = y if second is None else scratch(torch.empty_like(x))
    w2, b2, eps2 = (None, None, eps) if second is None else second
    if n_rows == 0:
        return y, y2
    rows, block_d, warps = _tile(d, "layer_norm_fwd")
    _ln_forward_kernel[(triton.cdiv(n_rows, rows),)](
        x, r, x if weight is None else weight, x if bias is None else bias, y,
        x if w2 is None else w2, x if b2 is None else b2, y2, x if flags is None else flags[slot:],
        n_rows, d, n_rows * d, eps, eps2,
        HAS_R=residual is not None, HAS_W=weight is not None, HAS_B=bias is not None, PAIR=second is not None,
        HAS_W2=w2 is not None, HAS_B2=b2 is not None, FLAG=flags is not None and not flag_input,
        FLAG_X=flags is not None and flag_input, ROWS=rows, BLOCK_D=block_d, num_warps=warps)
    return y, y2


def layer_norm_backward(planes: torch.Tensor, weight: torch.Tensor | None, grad: torch.Tensor,
                        eps: float, sums_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, sums) with sums (2, d), summed in fp32 and rounded once to ``sums_dtype``: row 0
    sum_rows <g, n> (weight), row 1 sum_rows g_re (bias)."""
    x, g = scratch(planes.contiguous(), planes), scratch(grad.contiguous(), grad)
    n_rows, d = _rows(x)
    dx = scratch(torch.empty_like(x))
    if n_rows == 0:
        return dx, scratch(torch.zeros(2, d, dtype=sums_dtype, device=x.device))
    rows, block_d, warps = _tile(d, "layer_norm_bwd")
    tiles = triton.cdiv(n_rows, rows)
    progs = _programs(x.device, tiles, "layer_norm_bwd")
    part = scratch(torch.empty(progs, 2, d, dtype=torch.float32, device=x.device))
    _ln_backward_kernel[(progs,)](x, x if weight is None else weight, g, dx, part, n_rows, d, n_rows * d, eps, tiles, progs,
                      HAS_W=weight is not None, ROWS=rows, BLOCK_D=block_d, num_warps=warps)
    return dx, sum_partials(part.view(progs, 2 * d), sums_dtype).view(2, d)



# ---------------------------------------------------------------------- modReLU
@triton.jit
def _modrelu_forward_kernel(x_ptr, b_ptr, y_ptr, n_rows, d, plane,
                            BIAS_VEC: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)[:, None]
    cols = tl.arange(0, BLOCK_D)[None, :]
    mask = (rows < n_rows) & (cols < d)
    off = rows * d + cols
    re = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    im = tl.load(x_ptr + plane + off, mask=mask, other=0.0).to(tl.float32)
    if BIAS_VEC:
        b = tl.load(b_ptr + cols, mask=cols < d, other=0.0).to(tl.float32)
    else:
        b = tl.load(b_ptr).to(tl.float32)
    r = tl.math.sqrt_rn(re * re + im * im)
    nonzero = r > 0
    shifted = r + b
    active = nonzero & ((shifted > 0) | (shifted != shifted))  # a NaN bias counts as active
    scale = tl.where(active, tl.math.div_rn(shifted, tl.where(nonzero, r, 1.0)), 0.0)
    tl.store(y_ptr + off, (re * scale).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(y_ptr + plane + off, (im * scale).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _modrelu_backward_kernel(x_ptr, b_ptr, g_ptr, dx_ptr, part_ptr, n_rows, d, plane, n_tiles, n_progs,
                             BIAS_VEC: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)[None, :]
    cmask = cols < d
    if BIAS_VEC:
        b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        b = tl.load(b_ptr).to(tl.float32)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    tile = pid
    mask, off = _row_tile(tile, n_rows, d, cols, cmask, ROWS)
    xr, xi, gr, gi = _load_pair(x_ptr, g_ptr, off, mask, plane)
    while tile < n_tiles:  # tiles pid, pid + n_progs, ...
        mask, off = _row_tile(tile, n_rows, d, cols, cmask, ROWS)
        nxt = tile + n_progs
        n_mask, n_off = _row_tile(nxt, n_rows, d, cols, cmask, ROWS)
        # the next tile's loads in flight while this one computes (3-6 % faster on the H200)
        pxr, pxi, pgr, pgi = _load_pair(x_ptr, g_ptr, n_off, n_mask, plane)
        re = xr.to(tl.float32)
        im = xi.to(tl.float32)
        g_re = gr.to(tl.float32)
        g_im = gi.to(tl.float32)
        r = tl.math.sqrt_rn(re * re + im * im)
        nonzero = r > 0
        r_safe = tl.where(nonzero, r, 1.0)
        shifted = r + b
        active = nonzero & ((shifted > 0) | (shifted != shifted))
        u_re = tl.math.div_rn(re, r_safe)
        u_im = tl.math.div_rn(im, r_safe)
        ug = u_re * g_re + u_im * g_im  # Re(conj(u) g)
        k = tl.math.div_rn(b, r_safe)
        dx_re = tl.where(active, g_re + k * (g_re - u_re * ug), 0.0)
        dx_im = tl.where(active, g_im + k * (g_im - u_im * ug), 0.0)
        tl.store(dx_ptr + off, dx_re.to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(dx_ptr + plane + off, dx_im.to(dx_ptr.dtype.element_ty), mask=mask)
        acc += tl.sum(tl.where(active & mask, ug, 0.0), axis=0)
        xr, xi, gr, gi = pxr, pxi, pgr, pgi
        tile = nxt
    pcols = tl.arange(0, BLOCK_D)
    tl.store(part_ptr + pid * d + pcols, acc, mask=pcols < d)


def modrelu_forward(planes: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    x = scratch(planes.contiguous(), planes)
    n_rows, d = _rows(x)
    y = scratch(torch.empty_like(x))
    if n_rows == 0:
        return y
    rows, block_d, warps = _tile(d, "modrelu_fwd")
    _modrelu_forward_kernel[(triton.cdiv(n_rows, rows),)](
        x, scratch(bias.contiguous(), bias), y, n_rows, d, n_rows * d,
        BIAS_VEC=bias.dim() == 1, ROWS=rows, BLOCK_D=block_d, num_warps=warps)
    return y


def modrelu_backward(planes: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_bias): grad_bias has bias's shape, (d,) or (), and dtype, summed in fp32 and rounded once."""
    x, g = scratch(planes.contiguous(), planes), scratch(grad.contiguous(), grad)
    n_rows, d = _rows(x)
    dx = scratch(torch.empty_like(x))
    if n_rows == 0:
        return dx, scratch(torch.zeros(bias.shape, dtype=bias.dtype, device=x.device))
    rows, block_d, warps = _tile(d, "modrelu_bwd")
    tiles = triton.cdiv(n_rows, rows)
    progs = _programs(x.device, tiles, "modrelu_bwd")
    part = scratch(torch.empty(progs, d, dtype=torch.float32, device=x.device))
    _modrelu_backward_kernel[(progs,)](x, scratch(bias.contiguous(), bias), g, dx, part, n_rows, d, n_rows * d, tiles, progs,
                           BIAS_VEC=bias.dim() == 1, ROWS=rows, BLOCK_D=block_d, num_warps=warps)
    if bias.dim() == 1:
        return dx, sum_partials(part, bias.dtype)
    return dx, scratch(part.sum().to(bias.dtype))


# ------------------------------------------------------------------ row sums
# The sums over rows of planes (2, n_rows, d) (a complex linear's bias gradient: dy's rows): a few
# programs per SM each add their row tiles into an fp32 (ROWS, BLOCK_D) accumulator per plane and write
# its column sums as one partial row; a second kernel sums the partial rows in a fixed order (so the
# result is deterministic) and rounds once, each program loading all of them for its columns at once
# (a loop over them was latency-bound: 12.4 µs for the pair at 4096 x 512 on the H200; at once, 9.2 µs).
SUM_FINISH_COLS = 16  # columns of the partial rows per finishing program
#: The partial rows summed by the finishing kernel (True) or by torch's sum and a cast (False; the form
#: before the thirteenth session, kept to time both in one process: scripts/kernel_sweep.py --part ops;
#: on the H200 the kernel made LayerNorm's fwd+bwd 18.5 µs against 25.1, modReLU's 22.4 against 28.5)
PARTIALS_BY_KERNEL = True


@triton.jit
def _sum_rows_kernel(g_ptr, part_ptr, n_rows, d, plane, n_tiles, n_progs, ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)[None, :]
    cmask = cols < d
    acc_r = tl.zeros((ROWS, BLOCK_D), dtype=tl.float32)
    acc_i = tl.zeros((ROWS, BLOCK_D), dtype=tl.float32)
    tile = pid
    while tile < n_tiles:  # tiles pid, pid + n_progs, ...
        mask, off = _row_tile(tile, n_rows, d, cols, cmask, ROWS)
        acc_r += tl.load(g_ptr + off, mask=mask, other=0.0).to(tl.float32)
        acc_i += tl.load(g_ptr + plane + off, mask=mask, other=0.0).to(tl.float32)
        tile += n_progs
    pcols = tl.arange(0, BLOCK_D)
    tl.store(part_ptr + pid * 2 * d + pcols, tl.sum(acc_r, axis=0), mask=pcols < d)
    tl.store(part_ptr + pid * 2 * d + d + pcols, tl.sum(acc_i, axis=0), mask=pcols < d)


@triton.jit
def _sum_partials_kernel(part_ptr, out_ptr, n_parts, width, P: tl.constexpr, BLOCK: tl.constexpr):
    cols = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    acc = tl.zeros((P, BLOCK), dtype=tl.float32)
    start = 0
    while start < n_parts:
        rows = start + tl.arange(0, P)
        mask = (rows < n_parts)[:, None] & (cols < width)[None, :]
        acc += tl.load(part_ptr + rows.to(tl.int64)[:, None] * width + cols[None, :], mask=mask, other=0.0)
        start += P
    tl.store(out_ptr + cols, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=cols < width)


def sum_rows(planes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(2, d): the sums over all rows of planes (2, ..., d), accumulated in fp32 and rounded once to ``dtype``."""
    g = scratch(planes.contiguous(), planes)
    n_rows, d = _rows(g)
    if n_rows == 0 or d == 0:
        return scratch(torch.zeros((2, d), dtype=dtype, device=g.device))
    rows, block_d, warps = _tile(d, "sum_rows")
    tiles = triton.cdiv(n_rows, rows)
    progs = _programs(g.device, tiles, "sum_rows")
    part = scratch(torch.empty((progs, 2 * d), dtype=torch.float32, device=g.device))
    _sum_rows_kernel[(progs,)](g, part, n_rows, d, n_rows * d, tiles, progs, ROWS=rows, BLOCK_D=block_d,
                               num_warps=warps)
    return sum_partials(part, dtype).view(2, d)


def sum_partials(part: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(width,): the column sums of fp32 partial rows (n_parts, width), in one fixed order, rounded once to
    ``dtype`` (the last step of every kernel here that writes per-program partial sums)."""
    if not PARTIALS_BY_KERNEL:
        return scratch(part.sum(dim=0).to(dtype))
    n_parts, width = part.shape
    out = scratch(torch.empty(width, dtype=dtype, device=part.device))
    _sum_partials_kernel[(triton.cdiv(width, SUM_FINISH_COLS),)](
        part, out, n_parts, width, P=min(triton.next_power_of_2(n_parts), 1024), BLOCK=SUM_FINISH_COLS, num_warps=4)
    return out


# ----------------------------------------------------------- cross-entropy chunks
# The element-wise work of muse.train.loss's chunk loops: rows of a (n, width) chunk of logits
# (any float dtype, row stride ``stride``), fp32 arithmetic.  A tile is ROWS rows by BLOCK_W
# columns.  exp is libdevice's expf on the GPU (the CUDA libm accuracy that docs/numerics.md
# assumes; tl.exp is the faster ex2.approx form) and numpy's under the interpreter.


def _ce_tile(width: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK_W, num_warps) for rows of ``width`` logits: about 4096 elements per tile."""
    block_w = min(triton.next_power_of_2(max(width, 1)), 4096)
    return max(1, min(32, 4096 // block_w)), block_w, 8 if block_w >= 2048 else 4


@triton.jit
def _exp(x, INTERP: tl.constexpr):
    if INTERP:
        return tl.exp(x)
    else:
        return libdevice.exp(x)


@triton.jit
def _lse_rows_kernel(z_ptr, max_ptr, sum_ptr, n_rows, width, stride,
                     INTERP: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr, ONE_TILE: tl.constexpr):
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
    rmask = rows < n_rows
    base = z_ptr + rows[:, None] * stride
    cols = tl.arange(0, BLOCK_W)[None, :]
    old_max = tl.load(max_ptr + rows, mask=rmask, other=0.0)
    old_sum = tl.load(sum_ptr + rows, mask=rmask, other=0.0)
    if ONE_TILE:  # the row fits one tile: read once, max and sum from registers
        x = tl.load(base + cols, mask=rmask[:, None] & (cols < width), other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(old_max, tl.max(x, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)  # a row of -inf so far: exp(-inf) = 0
        c_sum = tl.sum(_exp(x - shift[:, None], INTERP), axis=1)
    else:  # each tile read once: the tiles' sums rescaled to the running max as it grows (measured +0.7 %
        # of Stage 1's training step against reading the row twice, the max first: docs/performance.md)
        t_max = tl.full((ROWS,), float("-inf"), tl.float32)
        t_sum = tl.zeros((ROWS,), tl.float32)
        c0 = 0
        while c0 < width:
            mask = rmask[:, None] & (c0 + cols < width)
            x = tl.load(base + c0 + cols, mask=mask, other=float("-inf")).to(tl.float32)
            m = tl.maximum(t_max, tl.max(x, axis=1))
            m_shift = tl.where(m == float("-inf"), 0.0, m)
            t_sum = t_sum * _exp(t_max - m_shift, INTERP) + tl.sum(_exp(x - m_shift[:, None], INTERP), axis=1)
            t_max = m
            c0 += BLOCK_W
        new_max = tl.maximum(old_max, t_max)
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        c_sum = t_sum * _exp(t_max - shift, INTERP)
    new_sum = old_sum * _exp(old_max - shift, INTERP) + c_sum
    tl.store(max_ptr + rows, new_max, mask=rmask)
    tl.store(sum_ptr + rows, new_sum, mask=rmask)


@triton.jit
def _softmax_grad_kernel(z_ptr, g_ptr, lse_ptr, t_ptr, keep_ptr, n_rows, width, stride_z, stride_g, offset,
                         on_target, uniform, INTERP: tl.constexpr, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    rows = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    rmask = rows < n_rows
    mask = rmask[:, None] & (cols[None, :] < width)
    x = tl.load(z_ptr + rows[:, None] * stride_z + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
    col = tl.load(t_ptr + rows, mask=rmask, other=-1) - offset  # outside [0, width): no target here
    keep = tl.load(keep_ptr + rows, mask=rmask, other=0.0)
    p = _exp(x - lse[:, None], INTERP)
    p = p - uniform  # label smoothing's eps / V (0: the plain gradient, unchanged)
    g = tl.where(cols[None, :] == col[:, None], p - on_target, p) * keep[:, None]
    tl.store(g_ptr + rows[:, None] * stride_g + cols[None, :], g.to(g_ptr.dtype.element_ty), mask=mask)


def _row_major(z: torch.Tensor) -> torch.Tensor:
    return z if z.stride(1) == 1 else z.contiguous()


def lse_rows(z: torch.Tensor, row_max: torch.Tensor, row_sum: torch.Tensor) -> None:
    """One chunk of the online log-sum-exp, in place: row_max <- max(row_max, max_j z_ij) and
    row_sum <- row_sum exp(old max - new max) + sum_j exp(z_ij - new max) (fp32 (n,) tensors)."""
    z = scratch(_row_major(z), z)
    n, width = z.shape
    if n == 0 or width == 0:
        return
    rows, block_w, warps = _ce_tile(width)
    _lse_rows_kernel[(triton.cdiv(n, rows),)](z, row_max, row_sum, n, width, z.stride(0), INTERP=interpreting(),
                                              ROWS=rows, BLOCK_W=block_w, ONE_TILE=width <= block_w, num_warps=warps)


def softmax_grad(z: torch.Tensor, lse: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor,
                 dtype: torch.dtype, offset: int = 0, in_place: bool = True, on_target: float = 1.0,
                 uniform: float = 0.0) -> torch.Tensor:
    """(exp(z - lse) - on_target onehot(targets - offset) - uniform) * keep, computed in fp32 and rounded
    once to ``dtype`` (z: the logits of vocabulary rows offset..; a target outside them has no column here;
    on_target 1 - eps and uniform eps / V for label smoothing eps).  Written over ``z`` when z is row-major
    of that dtype and ``in_place``."""
    z = scratch(_row_major(z), z)
    n, width = z.shape
    over_z = in_place and z.dtype == dtype
    g = z if over_z else scratch(torch.empty(n, width, dtype=dtype, device=z.device))
    if n == 0 or width == 0:
        return g
    rows, block_w, warps = _ce_tile(width)
    grid = (triton.cdiv(n, rows), triton.cdiv(width, block_w))
    _softmax_grad_kernel[grid](z, g, lse, targets, keep, n, width, z.stride(0), g.stride(0), offset,
                               float(on_target), float(uniform), INTERP=interpreting(), ROWS=rows, BLOCK_W=block_w, num_warps=warps)
    return g


# ------------------------------------------------------------- BK-Core resolvent
# Lanes (L, S): each program walks the sequences of BK_BLOCK lanes step by step (one lane per
# thread).  Complex numbers are (re, im) float32 pairs: a complex64 tensor is read through
# torch.view_as_real.  The loop carries one G per lane (the sequential recursion of
# muse.scan.bk) and loads the next step's inputs before it computes the current one, so the
# memory latency overlaps the arithmetic of the recursion.
BK_BLOCK = 32


@triton.jit
def _reciprocal(r_re, r_im):
    """1 / r = conj(r) / |r|^2 with r first scaled by the power of two 2^(127 - e), e the biased exponent
    of max(|Re r|, |Im r|): the scaling is exact, |r|^2 neither overflows nor underflows, and one
    division remains (4 roundings on the longest path: |r|^2, the quotient, the product)."""
    s = tl.maximum(tl.abs(r_re), tl.abs(r_im))
    e = (s.to(tl.int32, bitcast=True) >> 23) & 0xFF
    e = tl.minimum(tl.maximum(e, 1), 253)
    scale = ((254 - e) << 23).to(tl.float32, bitcast=True)  # 2^(127 - e)
    p = r_re * scale
    q = r_im * scale
    k = tl.math.div_rn(scale, p * p + q * q)
    return p * k, -q * k


@triton.jit
def _bk_forward_kernel(a_ptr, g0_ptr, g_ptr, n_lanes, n_steps, stride_lane, stride_step, z_re, z_im,
                       HAS_G0: tl.constexpr, BLOCK: tl.constexpr):
    lanes = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = lanes < n_lanes
    if HAS_G0:
        g_re = tl.load(g0_ptr + 2 * lanes, mask=mask, other=0.0)
        g_im = tl.load(g0_ptr + 2 * lanes + 1, mask=mask, other=0.0)
    else:
        g_re = tl.zeros((BLOCK,), dtype=tl.float32)
        g_im = tl.zeros((BLOCK,), dtype=tl.float32)
    a_p = a_ptr + lanes * stride_lane
    g_p = g_ptr + lanes * (2 * n_steps)
    a_re = tl.load(a_p, mask=mask, other=0.0)
    a_im = tl.load(a_p + 1, mask=mask, other=0.0)
    i = 0
    while i < n_steps:  # a while loop: the interpreter cannot take range() of a runtime int
        a_p += stride_step
        more = mask & (i + 1 < n_steps)
        next_re = tl.load(a_p, mask=more, other=0.0)
        next_im = tl.load(a_p + 1, mask=more, other=0.0)
        # masked lanes have r = -z: never 0, as Im z > 0
        g_re, g_im = _reciprocal((a_re - z_re) - g_re, (a_im - z_im) - g_im)
        tl.store(g_p, g_re, mask=mask)
        tl.store(g_p + 1, g_im, mask=mask)
        g_p += 2
        a_re = next_re
        a_im = next_im
        i += 1


@triton.jit
def _bk_backward_kernel(g_ptr, dg_ptr, da_ptr, dg0_ptr, n_lanes, n_steps, BLOCK: tl.constexpr):
    lanes = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    mask = lanes < n_lanes
    off = lanes * (2 * n_steps) + 2 * (n_steps - 1)  # the last step of each lane
    c_re = tl.zeros((BLOCK,), dtype=tl.float32)  # mu_{i+1}: what G_i receives from step i + 1
    c_im = tl.zeros((BLOCK,), dtype=tl.float32)
    more = mask & (n_steps > 0)
    g_re = tl.load(g_ptr + off, mask=more, other=0.0)
    g_im = tl.load(g_ptr + off + 1, mask=more, other=0.0)
    d_re = tl.load(dg_ptr + off, mask=more, other=0.0)
    d_im = tl.load(dg_ptr + off + 1, mask=more, other=0.0)
    i = 0
    while i < n_steps:
        more = mask & (i + 1 < n_steps)
        next_g_re = tl.load(g_ptr + off - 2, mask=more, other=0.0)
        next_g_im = tl.load(g_ptr + off - 1, mask=more, other=0.0)
        next_d_re = tl.load(dg_ptr + off - 2, mask=more, other=0.0)
        next_d_im = tl.load(dg_ptr + off - 1, mask=more, other=0.0)
        l_re = d_re + c_re  # lambda_i = grad_i + mu_{i+1}
        l_im = d_im + c_im
        s_re = g_re * g_re - g_im * g_im  # conj(G_i)^2
        s_im = -2.0 * g_re * g_im
        c_re = l_re * s_re - l_im * s_im  # mu_i = lambda_i conj(G_i)^2
        c_im = l_re * s_im + l_im * s_re
        tl.store(da_ptr + off, -c_re, mask=mask)
        tl.store(da_ptr + off + 1, -c_im, mask=mask)
        off -= 2
        g_re = next_g_re
        g_im = next_g_im
        d_re = next_d_re
        d_im = next_d_im
        i += 1
    tl.store(dg0_ptr + 2 * lanes, c_re, mask=mask)
    tl.store(dg0_ptr + 2 * lanes + 1, c_im, mask=mask)


def bk_green_forward(a: torch.Tensor, z_re: float, z_im: float, initial_state: torch.Tensor | None) -> torch.Tensor:
    """G (..., S) complex64 from a (..., S) complex64 and G_0 (...) or None: the resolvent recursion."""
    n_lanes, n_steps = math.prod(a.shape[:-1]), a.shape[-1]
    ar = scratch(torch.view_as_real(a.reshape(n_lanes, n_steps).resolve_conj()), a)  # (L, S, 2) float32, a view where it can be
    g = scratch(torch.empty((n_lanes, n_steps, 2), dtype=torch.float32, device=a.device))
    if n_lanes and n_steps:
        g0 = None if initial_state is None else scratch(torch.view_as_real(initial_state.resolve_conj().reshape(-1)).contiguous(), initial_state)
        _bk_forward_kernel[(triton.cdiv(n_lanes, BK_BLOCK),)](
            ar, ar if g0 is None else g0, g, n_lanes, n_steps, ar.stride(0), ar.stride(1), z_re, z_im,
            HAS_G0=g0 is not None, BLOCK=BK_BLOCK, num_warps=1)
    return torch.view_as_complex(g).reshape(a.shape)


def bk_green_backward(g: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_a (..., S), grad_G0 (...)) from the forward's G and grad_G, both (..., S) complex64."""
    n_lanes, n_steps = math.prod(g.shape[:-1]), g.shape[-1]
    gr = scratch(torch.view_as_real(g.resolve_conj().reshape(n_lanes, n_steps).contiguous()), g)  # (L, S, 2)
    dg = scratch(torch.view_as_real(grad.resolve_conj().reshape(n_lanes, n_steps).contiguous()), grad)  # (L, S, 2)
    da = scratch(torch.empty_like(gr))
    dg0 = scratch(torch.zeros((n_lanes, 2), dtype=torch.float32, device=g.device))
    if n_lanes and n_steps:
        _bk_backward_kernel[(triton.cdiv(n_lanes, BK_BLOCK),)](gr, dg, da, dg0, n_lanes, n_steps,
                                                                BLOCK=BK_BLOCK, num_warps=1)
    return torch.view_as_complex(da).reshape(g.shape), torch.view_as_complex(dg0).reshape(g.shape[:-1])


# -------------------------------------------------------- Hebbian (decayed linear attention)
# The sequence is walked in chunks of HEBB_CHUNK positions by one program per (batch x head, tile of
# HEBB_TILE_V value columns): the program carries its (d_k x BV) slice of the fast-weight state W in
# fp32 registers; inside a chunk the quadratic form with the decays exp(g_t - g_s) (g the in-chunk
# cumulative log-decay; the (BT x BT) q k^T is recomputed by each tile), across chunks the state.
# The products are tl.dot with input_precision="ieee" (fp32 FMA, no TF32).  Backward: a third grid
# axis splits the two independent passes -- backward over the chunks for dk, dv and the state's
# gradient, forward for dq (it needs the state entering each chunk); dv and dW_0 are tile-local,
# dq and dk are sums over all of d_v, so each tile writes its partial and the host sums over tiles.
# d(log_decay) follows outside from dq and dk (muse.scan.hebbian).
# ptxas 12.8 (sm_90a), d_head = 64, chunks of 16, tiles of 16, 8 warps: forward 140 registers, backward 192,
# no spills; held to 128 (two programs per SM) the forward still spills nothing and the backward 36 bytes.
# Chunks of 32 take 255 registers and the backward spills 124 bytes; tiles of 32 spill 8; 4 warps at tiles
# of 16 spill 20 (the untiled kernel: 243 and 255 registers, 44 bytes spilled in the backward).
HEBB_CHUNK = 16
HEBB_TILE_V = 16


@triton.jit
def _hebb_chunk(q_ptr, k_ptr, v_ptr, l_ptr, start, n_steps, d_k, d_v, cv,
                BT: tl.constexpr, BK: tl.constexpr):
    """q, k (BT, BK), v (BT, BV) at columns cv, g (BT,) in-chunk cumulative log-decay, g_last, causal decays
    (BT, BT), the (BT, BV) mask."""
    t = tl.arange(0, BT)
    rows = start + t
    ck = tl.arange(0, BK)
    rmask = rows < n_steps
    kmask = rmask[:, None] & (ck < d_k)[None, :]
    vmask = rmask[:, None] & (cv < d_v)[None, :]
    q = tl.load(q_ptr + rows[:, None] * d_k + ck[None, :], mask=kmask, other=0.0)
    k = tl.load(k_ptr + rows[:, None] * d_k + ck[None, :], mask=kmask, other=0.0)
    v = tl.load(v_ptr + rows[:, None] * d_v + cv[None, :], mask=vmask, other=0.0)
    g = tl.cumsum(tl.load(l_ptr + rows, mask=rmask, other=0.0), axis=0)  # padding adds 0
    g_last = tl.sum(tl.where(t == BT - 1, g, 0.0), axis=0)
    decay = tl.where(t[:, None] >= t[None, :], tl.exp(g[:, None] - g[None, :]), 0.0)  # (BT, BT)
    return q, k, v, g, g_last, decay, vmask


@triton.jit
def _hebb_forward_kernel(q_ptr, k_ptr, v_ptr, l_ptr, w0_ptr, y_ptr, ws_ptr, n_steps, d_k, d_v, eta,
                         HAS_W0: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Grid (batch x head, value tiles): y[:, tile] and the tile's slice of W_S."""
    bh = tl.program_id(0).to(tl.int64)
    q_ptr += bh * n_steps * d_k
    k_ptr += bh * n_steps * d_k
    v_ptr += bh * n_steps * d_v
    y_ptr += bh * n_steps * d_v
    l_ptr += bh * n_steps
    ck = tl.arange(0, BK)
    cv = tl.program_id(1) * BV + tl.arange(0, BV)
    w_off = bh * d_k * d_v + ck[:, None] * d_v + cv[None, :]
    w_mask = (ck < d_k)[:, None] & (cv < d_v)[None, :]
    if HAS_W0:
        w = tl.load(w0_ptr + w_off, mask=w_mask, other=0.0)
    else:
        w = tl.zeros((BK, BV), dtype=tl.float32)
    rows = tl.arange(0, BT)
    start = 0
    while start < n_steps:
        q, k, v, g, g_last, decay, vmask = _hebb_chunk(q_ptr, k_ptr, v_ptr, l_ptr, start, n_steps, d_k, d_v, cv,
                                                       BT, BK)
        a = tl.dot(q, tl.trans(k), input_precision="ieee") * decay * eta  # (BT, BT)
        y = tl.dot(a, v, input_precision="ieee") + tl.dot(q * tl.exp(g)[:, None], w, input_precision="ieee")
        tl.store(y_ptr + (start + rows)[:, None] * d_v + cv[None, :], y, mask=vmask)
        kw = k * (tl.exp(g_last - g) * eta)[:, None]
        w = w * tl.exp(g_last) + tl.dot(tl.trans(kw), v, input_precision="ieee")
        start += BT
    tl.store(ws_ptr + w_off, w, mask=w_mask)


@triton.jit
def _hebb_backward_kernel(q_ptr, k_ptr, v_ptr, l_ptr, w0_ptr, dy_ptr, dws_ptr, dq_ptr, dk_ptr, dv_ptr, dw0_ptr,
                          n_steps, d_k, d_v, eta, HAS_W0: tl.constexpr, HAS_DWS: tl.constexpr,
                          BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Grid (batch x head, value tiles, 2 passes: dk, dv, dW_0 / dq).  dq_ptr, dk_ptr: (tiles, batch x head,
    S, d_k) partial sums over the tile's value columns; dv and dW_0 are the tile's own columns."""
    bh = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1).to(tl.int64)
    n_lanes = tl.num_programs(0).to(tl.int64)
    q_ptr += bh * n_steps * d_k
    k_ptr += bh * n_steps * d_k
    v_ptr += bh * n_steps * d_v
    dy_ptr += bh * n_steps * d_v
    dq_ptr += (tile * n_lanes + bh) * n_steps * d_k
    dk_ptr += (tile * n_lanes + bh) * n_steps * d_k
    dv_ptr += bh * n_steps * d_v
    l_ptr += bh * n_steps
    ck = tl.arange(0, BK)
    cv = tile * BV + tl.arange(0, BV)
    w_off = bh * d_k * d_v + ck[:, None] * d_v + cv[None, :]
    w_mask = (ck < d_k)[:, None] & (cv < d_v)[None, :]
    rows = tl.arange(0, BT)
    if tl.program_id(2) == 0:  # the heavier pass first: the first wave of programs takes these
        # backward over the chunks, dW = the gradient of the state leaving the chunk:
        # dk_s = eta sum_{t >= s} D_ts (dy_t . v_s) q_t + eta exp(g_last - g_s) v_s dW^T,
        # dv_s = eta sum_{t >= s} D_ts (q_t . k_s) dy_t + eta exp(g_last - g_s) k_s dW,
        # dW <- exp(g_last) dW + sum_t exp(g_t) q_t^T dy_t.
        if HAS_DWS:
            dw = tl.load(dws_ptr + w_off, mask=w_mask, other=0.0)
        else:
            dw = tl.zeros((BK, BV), dtype=tl.float32)
        start = ((n_steps + BT - 1) // BT - 1) * BT
        while start >= 0:
            q, k, v, g, g_last, decay, vmask = _hebb_chunk(q_ptr, k_ptr, v_ptr, l_ptr, start, n_steps, d_k, d_v,
                                                           cv, BT, BK)
            dy = tl.load(dy_ptr + (start + rows)[:, None] * d_v + cv[None, :], mask=vmask, other=0.0)
            a = tl.dot(q, tl.trans(k), input_precision="ieee") * decay * eta
            da = tl.dot(dy, tl.trans(v), input_precision="ieee") * decay * eta
            to_end = (tl.exp(g_last - g) * eta)[:, None]
            dk = tl.dot(tl.trans(da), q, input_precision="ieee") + \
                tl.dot(v, tl.trans(dw), input_precision="ieee") * to_end
            dv = tl.dot(tl.trans(a), dy, input_precision="ieee") + tl.dot(k, dw, input_precision="ieee") * to_end
            kmask = ((start + rows) < n_steps)[:, None] & (ck < d_k)[None, :]
            tl.store(dk_ptr + (start + rows)[:, None] * d_k + ck[None, :], dk, mask=kmask)
            tl.store(dv_ptr + (start + rows)[:, None] * d_v + cv[None, :], dv, mask=vmask)
            dw = dw * tl.exp(g_last) + tl.dot(tl.trans(q * tl.exp(g)[:, None]), dy, input_precision="ieee")
            start -= BT
        tl.store(dw0_ptr + w_off, dw, mask=w_mask)
    else:
        # forward over the chunks: dq_t = exp(g_t) dy_t W^T + eta sum_{s <= t} D_ts (dy_t . v_s) k_s
        if HAS_W0:
            w = tl.load(w0_ptr + w_off, mask=w_mask, other=0.0)
        else:
            w = tl.zeros((BK, BV), dtype=tl.float32)
        start = 0
        while start < n_steps:
            q, k, v, g, g_last, decay, vmask = _hebb_chunk(q_ptr, k_ptr, v_ptr, l_ptr, start, n_steps, d_k, d_v,
                                                           cv, BT, BK)
            dy = tl.load(dy_ptr + (start + rows)[:, None] * d_v + cv[None, :], mask=vmask, other=0.0)
            da = tl.dot(dy, tl.trans(v), input_precision="ieee") * decay * eta  # (BT, BT)
            dq = tl.dot(da, k, input_precision="ieee") + \
                tl.dot(dy, tl.trans(w), input_precision="ieee") * tl.exp(g)[:, None]
            kmask = ((start + rows) < n_steps)[:, None] & (ck < d_k)[None, :]
            tl.store(dq_ptr + (start + rows)[:, None] * d_k + ck[None, :], dq, mask=kmask)
            kw = k * (tl.exp(g_last - g) * eta)[:, None]
            w = w * tl.exp(g_last) + tl.dot(tl.trans(kw), v, input_precision="ieee")
            start += BT


def _hebb_blocks(d_k: int, d_v: int) -> tuple[int, int, dict]:
    """(BK, BV, launch options): the whole of d_k, a tile of at most HEBB_TILE_V value columns (tl.dot needs
    every block dim >= 16); at BK = 64, 8 warps held to 128 registers so that two programs share an SM."""
    bk = max(16, triton.next_power_of_2(d_k))
    bv = max(16, min(HEBB_TILE_V, triton.next_power_of_2(d_v)))
    options = {"num_warps": 8 if bk >= 64 else 4}
    if bk == 64:
        options["maxnreg"] = 128
    return bk, bv, options


def _lanes(t: torch.Tensor, tail: int) -> torch.Tensor:
    """t (..., *last ``tail`` dims) as a contiguous (n, *those dims) tensor."""
    keep = t.shape[t.dim() - tail:]
    return scratch(t.reshape(math.prod(t.shape[:t.dim() - tail]), *keep).contiguous(), t)


def hebbian_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
                    initial_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (..., S, d_v), W_S (..., d_k, d_v)) of the decayed linear attention, float32."""
    n_steps, d_k, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    qq, kk, vv, ll = _lanes(q, 2), _lanes(k, 2), _lanes(v, 2), _lanes(log_decay, 1)
    n = qq.shape[0]
    y = scratch(torch.empty((n, n_steps, d_v), dtype=torch.float32, device=q.device))
    ws = scratch(torch.empty((n, d_k, d_v), dtype=torch.float32, device=q.device))
    w0 = None if initial_state is None else _lanes(initial_state, 2)
    if n and d_v:
        bk, bv, options = _hebb_blocks(d_k, d_v)
        _hebb_forward_kernel[(n, triton.cdiv(d_v, bv))](qq, kk, vv, ll, qq if w0 is None else w0, y, ws, n_steps,
                                                        d_k, d_v, eta, HAS_W0=w0 is not None, BT=HEBB_CHUNK,
                                                        BK=bk, BV=bv, **options)
    return y.reshape(v.shape), ws.reshape(*q.shape[:-2], d_k, d_v)


def hebbian_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, eta: float,
                     initial_state: torch.Tensor | None, grad_y: torch.Tensor, grad_state: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dW_0) given dy (..., S, d_v) and dW_S (..., d_k, d_v) or None."""
    n_steps, d_k, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    qq, kk, vv, ll, dy = _lanes(q, 2), _lanes(k, 2), _lanes(v, 2), _lanes(log_decay, 1), _lanes(grad_y, 2)
    n = qq.shape[0]
    bk, bv, options = _hebb_blocks(d_k, d_v)
    tiles = triton.cdiv(d_v, bv)
    alloc = torch.empty if tiles else torch.zeros  # d_v = 0: no program writes dq, dk
    dq, dk = (scratch(alloc((max(tiles, 1), *qq.shape), dtype=torch.float32, device=q.device)) for _ in range(2))
    dv = scratch(torch.empty_like(vv))
    dw0 = scratch(torch.empty((n, d_k, d_v), dtype=torch.float32, device=q.device))
    w0 = None if initial_state is None else _lanes(initial_state, 2)
    dws = None if grad_state is None else _lanes(grad_state, 2)
    if n and tiles:
        _hebb_backward_kernel[(n, tiles, 2)](qq, kk, vv, ll, qq if w0 is None else w0, dy,
                                             qq if dws is None else dws, dq, dk, dv, dw0, n_steps, d_k, d_v, eta,
                                             HAS_W0=w0 is not None, HAS_DWS=dws is not None, BT=HEBB_CHUNK, BK=bk,
                                             BV=bv, **options)
    dq, dk = (scratch(t.sum(0)) if tiles > 1 else t[0] for t in (dq, dk))  # the tiles' partial sums
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape), dw0.reshape(*q.shape[:-2], d_k, d_v)


# ------------------------------------------------------- selective diagonal scan
# h_t = exp(l_t) h_{t-1} + x_t per (batch, channel) lane and plane (muse.scan.selective_diag): one program
# per batch row and block of SEL_BLOCK channels walks the sequence in tiles of SEL_CHUNK tokens.  Each tile
# is one (SEL_CHUNK, SEL_BLOCK) load per input (contiguous channels), an associative scan down the tokens of
# the pairs (a, x) under (a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2), which gives each token the product P_t of
# the tile's decays up to it and the tile's own sum s_t, then h_t = s_t + P_t h_in with the state h_in that
# entered the tile (fp32, carried in registers to the next tile).  Backward is the same scan over the tokens
# reversed: G_t = dy_t + a_{t+1} G_{t+1} (G_S = dh_S), dx_t = G_t, dl_t = a_t Re(conj(G_t) h_{t-1})
# (h_{t-1} the forward's output at t - 1, or h_0), dh_0 = a_0 G_0.  Memory: the inputs and outputs only,
# against the chunked PyTorch form's (L x L) decay matrix per chunk and channel.  exp as in the
# cross-entropy kernels (_exp).
# launch (H200, B4 S1024 d_state 512, the sixteenth session's sweep of 8/16/32 x 32/64/128): 16 channels x
# 128 tokens, 0.038 / 0.055 ms forward / backward against 32 x 64's 0.060 / 0.082 (more programs at small batch)
SEL_BLOCK = 16
SEL_CHUNK = SELECTIVE_TILE


@triton.jit
def _sel_combine(a1, r1, i1, a2, r2, i2):
    return a1 * a2, a2 * r1 + r2, a2 * i1 + i2


@triton.jit
def _sel_last_row(v, rows, BT: tl.constexpr):
    return tl.sum(tl.where(rows[:, None] == BT - 1, v, 0.0), axis=0)


@triton.jit
def _sel_forward_kernel(x_ptr, l_ptr, h0_ptr, y_ptr, hs_ptr, n_steps, n, plane, state_plane,
                        HAS_H0: tl.constexpr, INTERP: tl.constexpr, BLOCK: tl.constexpr, BT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cmask = c < n
    rows = tl.arange(0, BT)
    if HAS_H0:
        hr = tl.load(h0_ptr + b * n + c, mask=cmask, other=0.0)
        hi = tl.load(h0_ptr + state_plane + b * n + c, mask=cmask, other=0.0)
    else:
        hr = tl.zeros((BLOCK,), dtype=tl.float32)
        hi = tl.zeros((BLOCK,), dtype=tl.float32)
    base = b * n_steps * n
    t0 = 0
    while t0 < n_steps:  # a while loop: the interpreter cannot take range() of a runtime int
        t = t0 + rows
        off = base + t[:, None] * n + c[None, :]
        m = (t[:, None] < n_steps) & cmask[None, :]
        a = _exp(tl.load(l_ptr + off, mask=m, other=0.0), INTERP)  # rows past the end: a = 1, x = 0
        xr = tl.load(x_ptr + off, mask=m, other=0.0)
        xi = tl.load(x_ptr + plane + off, mask=m, other=0.0)
        p, sr, si = tl.associative_scan((a, xr, xi), 0, _sel_combine)
        yr = sr + p * hr[None, :]
        yi = si + p * hi[None, :]
        tl.store(y_ptr + off, yr, mask=m)
        tl.store(y_ptr + plane + off, yi, mask=m)
        hr = _sel_last_row(yr, rows, BT)
        hi = _sel_last_row(yi, rows, BT)
        t0 += BT
    tl.store(hs_ptr + b * n + c, hr, mask=cmask)
    tl.store(hs_ptr + state_plane + b * n + c, hi, mask=cmask)


@triton.jit
def _sel_backward_kernel(l_ptr, y_ptr, h0_ptr, dy_ptr, dhs_ptr, dx_ptr, dl_ptr, dh0_ptr, n_steps, n, plane,
                         state_plane, HAS_H0: tl.constexpr, INTERP: tl.constexpr, BLOCK: tl.constexpr,
                         BT: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cmask = c < n
    rows = tl.arange(0, BT)
    gr_in = tl.load(dhs_ptr + b * n + c, mask=cmask, other=0.0)  # G of the token after the tile; at first dh_S
    gi_in = tl.load(dhs_ptr + state_plane + b * n + c, mask=cmask, other=0.0)
    if HAS_H0:
        h0r = tl.load(h0_ptr + b * n + c, mask=cmask, other=0.0)
        h0i = tl.load(h0_ptr + state_plane + b * n + c, mask=cmask, other=0.0)
    else:
        h0r = tl.zeros((BLOCK,), dtype=tl.float32)
        h0i = tl.zeros((BLOCK,), dtype=tl.float32)
    base = b * n_steps * n
    t0 = ((n_steps - 1) // BT) * BT
    while t0 >= 0:
        t = t0 + BT - 1 - rows  # row 0 is the tile's last token: the scan runs backwards in time
        off = base + t[:, None] * n + c[None, :]
        m = (t[:, None] < n_steps) & cmask[None, :]
        mn = (t[:, None] + 1 < n_steps) & cmask[None, :]
        a_next = _exp(tl.load(l_ptr + off + n, mask=mn, other=0.0), INTERP)  # a_{t+1}; 1 past the end
        dyr = tl.load(dy_ptr + off, mask=m, other=0.0)
        dyi = tl.load(dy_ptr + plane + off, mask=m, other=0.0)
        p, sr, si = tl.associative_scan((a_next, dyr, dyi), 0, _sel_combine)
        gr = sr + p * gr_in[None, :]
        gi = si + p * gi_in[None, :]
        tl.store(dx_ptr + off, gr, mask=m)
        tl.store(dx_ptr + plane + off, gi, mask=m)
        first = t[:, None] == 0
        mp = m & (t[:, None] > 0)
        pr = tl.where(first, h0r[None, :], tl.load(y_ptr + off - n, mask=mp, other=0.0))
        pi = tl.where(first, h0i[None, :], tl.load(y_ptr + plane + off - n, mask=mp, other=0.0))
        a = _exp(tl.load(l_ptr + off, mask=m, other=0.0), INTERP)
        tl.store(dl_ptr + off, a * (gr * pr + gi * pi), mask=m)
        gr_in = _sel_last_row(gr, rows, BT)  # G at the tile's first token
        gi_in = _sel_last_row(gi, rows, BT)
        t0 -= BT
    a0 = _exp(tl.load(l_ptr + base + c, mask=cmask, other=0.0), INTERP)
    tl.store(dh0_ptr + b * n + c, a0 * gr_in, mask=cmask)
    tl.store(dh0_ptr + state_plane + b * n + c, a0 * gi_in, mask=cmask)


def selective_scan_forward(x: torch.Tensor, log_decay: torch.Tensor, initial_state: torch.Tensor | None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """x (2, B, S, n), log_decay (B, S, n), h_0 (2, B, n) or None, float32 -> (y (2, B, S, n), h_S (2, B, n))."""
    _, batch, n_steps, n = x.shape
    xx, ll = scratch(x.contiguous(), x), scratch(log_decay.contiguous(), log_decay)
    h0 = None if initial_state is None else scratch(initial_state.contiguous(), initial_state)
    y = scratch(torch.empty_like(xx))
    hs = scratch(x.new_empty((2, batch, n)))
    if batch and n:
        _sel_forward_kernel[(batch, triton.cdiv(n, SEL_BLOCK))](
            xx, ll, xx if h0 is None else h0, y, hs, n_steps, n, batch * n_steps * n, batch * n,
            HAS_H0=h0 is not None, INTERP=interpreting(), BLOCK=SEL_BLOCK, BT=SEL_CHUNK, num_warps=4)
    return y, hs


def selective_scan_backward(log_decay: torch.Tensor, y: torch.Tensor, initial_state: torch.Tensor | None,
                            grad_y: torch.Tensor, grad_state: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx (2, B, S, n), d log_decay (B, S, n), dh_0 (2, B, n)) given the forward's y and dy, dh_S."""
    _, batch, n_steps, n = y.shape
    ll, yy = scratch(log_decay.contiguous(), log_decay), scratch(y.contiguous(), y)
    dy, dhs = scratch(grad_y.contiguous(), grad_y), scratch(grad_state.contiguous(), grad_state)
    h0 = None if initial_state is None else scratch(initial_state.contiguous(), initial_state)
    dx = scratch(torch.empty_like(yy))
    dl = scratch(torch.empty_like(ll))
    dh0 = scratch(yy.new_zeros((2, batch, n)))
    if batch and n:
        _sel_backward_kernel[(batch, triton.cdiv(n, SEL_BLOCK))](
            ll, yy, yy if h0 is None else h0, dy, dhs, dx, dl, dh0, n_steps, n, batch * n_steps * n, batch * n,
            HAS_H0=h0 is not None, INTERP=interpreting(), BLOCK=SEL_BLOCK, BT=SEL_CHUNK, num_warps=4)
    return dx, dl, dh0


# ------------------------------------------------------------------ complex GEMM
# C = op(A) @ op(B) (+ bias) on planar operands: A (2, M, K), B (2, K, N), any strides (a transposed view
# is a stride swap, no copy), op = identity or conjugation.  Each program computes one (BLOCK_M, BLOCK_N)
# tile of both output planes with four tl.dot per K step into three fp32 accumulators: the product that
# enters with a minus sign (which one depends on the conjugations) is summed in its own accumulator and
# subtracted once after the loop, and one final sign flip of the imaginary accumulator finishes a
# conjugated B, so nothing is rounded before the end.  The bias is added in fp32 and the result rounded once.
# (``CMM_NEG_ACC = False``: the minus sign rides on a negated copy of the A tile in registers instead;
# ptxas for sm_90a then serialises the wgmma pipeline of the 64-wide forward and dx configurations.)
# Split-K (a second grid axis, for outputs too small to fill the GPU, such as the weight gradient)
# writes fp32 partials that the host sums in fp32 before the one rounding.
# Hopper: shared memory per stage is 2 (BM + BN) BK fp16 elements (64 KiB at 128 x 128 x 64, three
# stages fit the H200's 227 KiB); the three accumulators take 3 BM BN / (32 num_warps) registers a thread.
# Triton 3.6 for sm_90a (tests/kernels/test_kernels_complex_mm_sm90_build.py runs ptxas -v): every
# config below lowers to wgmma with cp.async pipelining, 123-192 KiB of shared memory, and no config of
# the forward, dx or dW is serialised; with three accumulators 128 x 128 tiles take 242-255 registers
# (no spills), 128 x 64 at 8 warps 159-161, 64 x 128 at 4 warps 255 (dx spills 4 bytes), 64 x 64 160-162.
CMM_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_stages=4, num_warps=8),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_stages=4, num_warps=8),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}, num_stages=3, num_warps=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_stages=4, num_warps=4),
]
CMM_INTERPRET_BLOCK = 16  # the interpreter's one tile size (small: several tiles and K steps at test sizes)
#: The minus-signed products in a third accumulator (True) or on a negated A tile (False).  H200, 4096 x 512
#: -> 512, two runs: forward 17.3-17.4 / 16.9 µs, dx 16.7 / 17.4, dW (split 2) 22.2 / 23.7
#: (scripts/kernel_sweep.py --part linear, twelfth session)
CMM_NEG_ACC = True
CMM_GROUP_M = 8  # tiles walked in groups of 8 rows of tiles, so neighbouring programs share operands in L2


@triton.jit
def _cmm_step(a_ptrs, b_ptrs, s_ap, s_bp, idx, k_lo, k_per, K, acc_r, acc_i, acc_n,
              SAME_SIGN: tl.constexpr, NEG_ACC: tl.constexpr):
    """One K step of the accumulators.  With s = +-1 the product of the two conjugations' signs:
    re = sum ar br - s sum ai bi, im = sum ar bi + s sum ai br (the caller flips im at the end when B is
    conjugated); the minus-signed product goes to ``acc_n`` (NEG_ACC) or rides on a negated A tile."""
    k_in = (idx < k_per) & (k_lo + idx < K)
    ar = tl.load(a_ptrs, mask=k_in[None, :], other=0.0)
    ai = tl.load(a_ptrs + s_ap, mask=k_in[None, :], other=0.0)
    br = tl.load(b_ptrs, mask=k_in[:, None], other=0.0)
    bi = tl.load(b_ptrs + s_bp, mask=k_in[:, None], other=0.0)
    acc_r = tl.dot(ar, br, acc_r)
    acc_i = tl.dot(ar, bi, acc_i)
    if SAME_SIGN:
        if NEG_ACC:
            acc_n = tl.dot(ai, bi, acc_n)
        else:
            acc_r = tl.dot(-ai, bi, acc_r)
        acc_i = tl.dot(ai, br, acc_i)
    else:
        acc_r = tl.dot(ai, bi, acc_r)
        if NEG_ACC:
            acc_n = tl.dot(ai, br, acc_n)
        else:
            acc_i = tl.dot(-ai, br, acc_i)
    return acc_r, acc_i, acc_n


@triton.jit
def _cmm_kernel(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K, k_per,
                s_ap, s_am, s_ak, s_bp, s_bk, s_bn, s_biasp, s_biasn, s_cs, s_cp, s_cm, s_cn,
                CONJ_A: tl.constexpr, CONJ_B: tl.constexpr, HAS_BIAS: tl.constexpr, WHILE_LOOP: tl.constexpr,
                NEG_ACC: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    k_lo = pid_k * k_per
    # rows and columns past the edge read row / column 0 again (in bounds); their results are not stored
    a_ptrs = a_ptr + (rm % M).to(tl.int64)[:, None] * s_am + (k_lo + rk).to(tl.int64)[None, :] * s_ak
    b_ptrs = b_ptr + (k_lo + rk).to(tl.int64)[:, None] * s_bk + (rn % N).to(tl.int64)[None, :] * s_bn
    acc_r = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_n = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    n_steps = tl.cdiv(k_per, BLOCK_K)  # this program's slice [k_lo, k_lo + k_per) of K
    if WHILE_LOOP:  # the interpreter (numpy 2) cannot take range() of a runtime int
        step = 0
        while step < n_steps:
            acc_r, acc_i, acc_n = _cmm_step(a_ptrs, b_ptrs, s_ap, s_bp, step * BLOCK_K + rk, k_lo, k_per, K,
                                            acc_r, acc_i, acc_n, CONJ_A == CONJ_B, NEG_ACC)
            a_ptrs += BLOCK_K * s_ak
            b_ptrs += BLOCK_K * s_bk
            step += 1
    else:  # a for loop: software-pipelined over num_stages
        for step in range(0, n_steps):
            acc_r, acc_i, acc_n = _cmm_step(a_ptrs, b_ptrs, s_ap, s_bp, step * BLOCK_K + rk, k_lo, k_per, K,
                                            acc_r, acc_i, acc_n, CONJ_A == CONJ_B, NEG_ACC)
            a_ptrs += BLOCK_K * s_ak
            b_ptrs += BLOCK_K * s_bk
    if NEG_ACC:
        if CONJ_A == CONJ_B:
            acc_r -= acc_n
        else:
            acc_i -= acc_n
    if CONJ_B:
        acc_i = -acc_i
    if HAS_BIAS:
        acc_r += tl.load(bias_ptr + rn * s_biasn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        acc_i += tl.load(bias_ptr + s_biasp + rn * s_biasn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + pid_k * s_cs + rm.to(tl.int64)[:, None] * s_cm + rn.to(tl.int64)[None, :] * s_cn
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    # stored through a select (the same values): straight from the accumulators, an fp32 store (the split-K
    # partials) made ptxas for sm_90a serialise the wgmma pipeline of the 128 x 128 configurations
    tl.store(c_ptrs, tl.where(mask, acc_r, 0.0).to(c_ptr.dtype.element_ty), mask=mask)
    tl.store(c_ptrs + s_cp, tl.where(mask, acc_i, 0.0).to(c_ptr.dtype.element_ty), mask=mask)


# cache_results: the choice per shape is kept in Triton's on-disk cache, so a second process (a resumed
# run, the other jobs of a sweep) does not spend the ~18 s of tuning again
_cmm_tuned = triton.autotune(configs=CMM_CONFIGS, key=["M", "N", "K", "k_per", "s_am", "s_ak", "s_bk", "s_bn", "NEG_ACC"],
                             cache_results=True)(_cmm_kernel)


#: The split-K partial planes' memory: at most this many bytes (they sit on the backward's peak).
SPLIT_K_BYTES = 8 * 2**20


def _split_k(device: torch.device, m: int, n: int, k: int) -> int:
    """K slices for an output of too few 128 x 128 tiles to fill the GPU (the weight gradient of a linear
    is (out, in), its K is every token): enough programs for one wave, slices of >= 512, fp32 partial
    planes within SPLIT_K_BYTES; 1 otherwise."""
    if device.type != "cuda" or interpreting():
        return 1
    sms = _sms(device)
    tiles = triton.cdiv(m, 128) * triton.cdiv(n, 128)
    if k < 1024:
        return 1
    # a quarter of a wave of 128 x 128 tiles: at 16 tiles (512 x 512, K = 4096) on the H200 split 2
    # took 24.2 µs, 4 26.5, 1 34.8, 8 36.1 (the partials' traffic and sums outgrow the added programs)
    return max(1, min(sms // (4 * tiles), k // 512, 16, SPLIT_K_BYTES // (2 * m * n * 4)))


def complex_mm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, conj_a: bool, conj_b: bool,
               split_k: int | None = None) -> torch.Tensor:
    """Planes (2, M, N) of op(a) @ op(b) + bias for planes a (2, M, K), b (2, K, N) of any strides, bias
    (2, N) or None, op = conj where asked: fp32 accumulation, one rounding to a's dtype.  ``split_k``
    None: :func:`_split_k` decides."""
    _, m, k = a.shape
    n = b.shape[2]
    out = scratch(torch.empty((2, m, n), dtype=a.dtype, device=a.device))
    if m == 0 or n == 0:
        return out
    split = _split_k(a.device, m, n, k) if split_k is None else split_k
    target = out if split == 1 else scratch(torch.empty((split, 2, m, n), dtype=torch.float32, device=a.device))
    in_kernel_bias = bias if split == 1 else None
    k_per = k if split == 1 else triton.cdiv(triton.cdiv(k, split), 64) * 64  # slices: whole K steps
    args = (a, b, a if in_kernel_bias is None else in_kernel_bias, target, m, n, k, k_per,
            a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
            *((0, 0) if in_kernel_bias is None else in_kernel_bias.stride()),
            target.stride(0) if split > 1 else 0, *target.stride()[-3:])
    flags = {"CONJ_A": conj_a, "CONJ_B": conj_b, "HAS_BIAS": in_kernel_bias is not None,
             "WHILE_LOOP": interpreting(), "NEG_ACC": CMM_NEG_ACC, "GROUP_M": CMM_GROUP_M}
    if interpreting():
        blk = CMM_INTERPRET_BLOCK
        grid = (triton.cdiv(m, blk) * triton.cdiv(n, blk), split)
        _cmm_kernel[grid](*args, **flags, BLOCK_M=blk, BLOCK_N=blk, BLOCK_K=blk)
    else:
        _cmm_tuned[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), split)](
            *args, **flags)
    if split == 1:
        return out
    step = 1  # the partials summed pairwise in place (ceil(log2 split) roundings; no further fp32 output)
    while 2 * step < split:
        target[0 : split - step : 2 * step] += target[step :: 2 * step]
        step *= 2
    if bias is None:  # the last pair's fp32 sum rounded once straight into the output: one launch, not two
        return torch.add(target[0], target[step], out=out)
    total = target[0] + target[step]
    total += bias.float()[:, None, :]
    return out.copy_(total)
