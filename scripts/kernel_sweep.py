"""Launch shapes of the element-wise kernels, and the complex linear's backward pieces, timed on one GPU.

    python3 scripts/kernel_sweep.py [--rows 4096] [--d 512] [--quick] [--part all|elementwise|linear|ops]

Every figure is a CUDA graph of the calls over inputs rotated beyond L2, replayed under
``triton.testing.do_bench`` (median), per call (``benchmarks.speed.graph_seconds``), so the host is out.
Bandwidth is the fewest bytes each call must move over its time, against a copy of 16 MiB (the forward's
bytes at the default size) timed the same way.  The tables decide ``muse.kernels._triton.TILES``,
``PROGRAMS_PER_SM`` and the weight gradient's split-K; docs/performance.md keeps what they showed.
"""

from __future__ import annotations

import argparse
import itertools
import math

import torch

from benchmarks.speed import Timer, _rotation, graph_seconds
from muse import complex as C
from muse.kernels import _triton as K


def _pct(nbytes: int, seconds: float, copy_gbps: float) -> str:
    gbps = nbytes / seconds / 1e9
    return f"{seconds * 1e6:8.1f} µs {gbps:7,.0f} GB/s {100 * gbps / copy_gbps:4.0f} %"


def elementwise(rows: int, d: int, timer: Timer, dev: torch.device, quick: bool) -> dict:
    """Time each kernel over its grid of launch shapes; returns the fastest shape of each."""
    gen = torch.Generator().manual_seed(0)
    nbytes = 2 * rows * d * 2

    def planes():
        return torch.randn(2, rows, d, generator=gen).to(dev, torch.float16)

    src = _rotation(lambda: (planes(), planes()), dev, 2 * nbytes)
    copy_gbps = 2 * nbytes / graph_seconds(timer, lambda a, b: b.copy_(a), src, dev) / 1e9
    del src
    print(f"\nsame-size copy ({2 * nbytes >> 20} MiB read + written): {copy_gbps:,.0f} GB/s")
    w = torch.randn(d, generator=gen).to(dev, torch.float16)
    b = (0.1 * torch.randn(d, generator=gen)).to(dev, torch.float16)
    fwd = {"layer_norm_fwd": lambda x: K.layer_norm_forward(x, w, b, 1e-5),
           "modrelu_fwd": lambda x: K.modrelu_forward(x, b)}
    bwd = {"layer_norm_bwd": lambda x, g: K.layer_norm_backward(x, w, g, 1e-5),
           "modrelu_bwd": lambda x, g: K.modrelu_backward(x, b, g)}
    sets1 = _rotation(lambda: (planes(),), dev, nbytes)
    sets2 = _rotation(lambda: (planes(), planes()), dev, 2 * nbytes)
    elements = (512, 1024, 2048) if quick else (512, 1024, 2048, 4096, 8192)
    warps = (1, 2, 4) if quick else (1, 2, 4, 8)
    best = {}
    saved = dict(K.TILES), dict(K.PROGRAMS_PER_SM)
    try:
        for name, fn in fwd.items():
            print(f"\n{name} (reads and writes {nbytes >> 20} MiB): elements per plane in a tile, warps")
            for e, wp in itertools.product(elements, warps):
                K.TILES[name] = (e, wp)
                t = graph_seconds(timer, fn, sets1, dev)
                best[name] = min(best.get(name, (t, (e, wp))), (t, (e, wp)))
                print(f"  {e:5d} {wp}: {_pct(2 * nbytes, t, copy_gbps)}")
        for name, fn in bwd.items():
            print(f"\n{name} with its partial-sum reduction (reads 2, writes 1 planar tensor):"
                  " elements, warps, programs per SM")
            for e, wp, p in itertools.product(elements, warps, (4, 8, 16) if quick else (1, 2, 4, 8, 16)):
                K.TILES[name] = (e, wp)
                K.PROGRAMS_PER_SM[name] = p
                t = graph_seconds(timer, fn, sets2, dev)
                best[name] = min(best.get(name, (t, (e, wp, p))), (t, (e, wp, p)))
                print(f"  {e:5d} {wp} {p:2d}: {_pct(3 * nbytes, t, copy_gbps)}")
    finally:
        K.TILES.update(saved[0])
        K.PROGRAMS_PER_SM.update(saved[1])
    print("\nfastest: " + "; ".join(f"{k} {v[1]} {v[0] * 1e6:.1f} µs" for k, v in best.items()))
    return {k: v[1] for k, v in best.items()}


def apply(best: dict) -> None:
    """Set the kernels' launch shapes to ``best`` (from :func:`elementwise`)."""
    for name, shape in best.items():
        K.TILES[name] = shape[:2]
        if len(shape) > 2:
            K.PROGRAMS_PER_SM[name] = shape[2]


def op_rows_now(rows: int, d: int, timer: Timer, dev: torch.device) -> None:
    """The benchmark's own eager-kernel op rows (``muse bench speed``) with the launch shapes as set now."""
    from benchmarks.speed import SpeedConfig, ceilings, op_rows

    cfg = SpeedConfig(device="cuda", variants=("kernels",))
    for r in op_rows(cfg, dev, timer, rows, d, ceilings(cfg, dev, timer), ("kernels",)):
        if r["op"] != "complex_linear" and r["status"] == "measured":
            print(f"  {r['op']} kernels: fwd {r['fwd_s'] * 1e6:.1f} µs ({r['fwd_pct_copy_same']:.0f} % of the same-size copy),"
                  f" fwd+bwd {r['fwd_bwd_s'] * 1e6:.1f} µs ({r['fwd_bwd_pct_copy_same']:.0f} %)")


def linear_backward(rows: int, d: int, timer: Timer, dev: torch.device) -> None:
    """dx, dW (per split-K), db of the complex linear rows x d -> d, and one real GEMM of the block size."""
    C.set_gemm_policy()
    gen = torch.Generator().manual_seed(1)
    flop = 8 * rows * d * d  # four real GEMMs of rows x d x d

    def planes(r, c):
        return torch.randn(2, r, c, generator=gen).to(dev, torch.float16)

    wp = planes(d, d) / math.sqrt(d)
    nb = 2 * rows * d * 2
    sets = _rotation(lambda: (planes(rows, d), planes(rows, d)), dev, 2 * nb)
    a = torch.randn(rows, 2 * d, generator=gen).to(dev, torch.float16)
    bm = torch.randn(2 * d, 2 * d, generator=gen).to(dev, torch.float16)
    t_real = graph_seconds(timer, lambda: torch.mm(a, bm), [()], dev)
    print(f"\ncomplex linear {rows} x {d} -> {d} backward pieces; one real {rows} x {2 * d} x {2 * d} GEMM:"
          f" {t_real * 1e6:.1f} µs")
    saved = K.CMM_NEG_ACC
    try:
        for neg in (True, False):
            K.CMM_NEG_ACC = neg
            how = "minus terms in their own accumulator" if neg else "on a negated A tile"
            t = graph_seconds(timer, lambda x, g: K.complex_mm(x, wp.transpose(1, 2), None, False, False), sets, dev)
            print(f"  forward (no bias), {how}: {t * 1e6:.1f} µs, {flop / t / 1e12:.0f} TFLOP/s")
            t = graph_seconds(timer, lambda x, g: K.complex_mm(g, wp, None, False, True), sets, dev)
            print(f"  dx = dy conj(W), {how}: {t * 1e6:.1f} µs, {flop / t / 1e12:.0f} TFLOP/s")
            t = graph_seconds(timer, lambda x, g: K.complex_mm(g.transpose(1, 2), x, None, False, True), sets, dev)
            print(f"  dW (default split), {how}: {t * 1e6:.1f} µs, {flop / t / 1e12:.0f} TFLOP/s")
    finally:
        K.CMM_NEG_ACC = saved
    for out_f, in_f in ((d, d), (2 * d, d), (d, 2 * d)):  # the mix preset's linears: d -> d, the FFN's d <-> 2d
        xs = _rotation(lambda i=in_f, o=out_f: (planes(rows, i), planes(rows, o)), dev, 2 * rows * (in_f + out_f) * 2)
        f = 8 * rows * in_f * out_f
        for split in (1, 2, 4, 8):
            t = graph_seconds(timer, lambda x, g, s=split: K.complex_mm(g.transpose(1, 2), x, None, False, True,
                                                                        split_k=s), xs, dev)
            print(f"  dW ({out_f} x {in_f}) = dy^T conj(x), split-K {split}: {t * 1e6:.1f} µs, {f / t / 1e12:.0f} TFLOP/s")
        print(f"  (the default split-K of dW ({out_f} x {in_f}): {K._split_k(dev, out_f, in_f, rows)})")
        del xs
    t = graph_seconds(timer, lambda x, g: g.float().sum(dim=1).half(), sets, dev)
    print(f"  db as g.float().sum(1): {t * 1e6:.1f} µs")
    t = graph_seconds(timer, lambda x, g: g.sum(dim=1, dtype=torch.float32).half(), sets, dev)
    print(f"  db as g.sum(1, dtype=float32): {t * 1e6:.1f} µs")
    ones = torch.ones(2, 1, rows, dtype=torch.float16, device=dev)  # db as a GEMM: cuBLAS accumulates in fp32
    t = graph_seconds(timer, lambda x, g: torch.bmm(ones, g), sets, dev)
    print(f"  db as bmm(ones row, dy), fp16 out: {t * 1e6:.1f} µs")
    try:
        t = graph_seconds(timer, lambda x, g: torch.bmm(ones, g, out_dtype=torch.float32).half(), sets, dev)
        print(f"  db as bmm(ones row, dy, out_dtype=float32): {t * 1e6:.1f} µs")
    except (RuntimeError, TypeError, NotImplementedError) as e:
        print(f"  db as bmm(..., out_dtype=float32): not available ({type(e).__name__})")
    if rows % 64 == 0:  # two stages: 64 row blocks summed in parallel, then their fp32 sums
        t = graph_seconds(timer, lambda x, g: g.view(2, 64, rows // 64, d).sum(dim=2, dtype=torch.float32)
                          .sum(dim=1).half(), sets, dev)
        print(f"  db in two stages (64 row blocks): {t * 1e6:.1f} µs")
    saved = K.TILES["sum_rows"], K.PROGRAMS_PER_SM["sum_rows"], K.SUM_FINISH_COLS
    try:
        for e, wps, p, fc in itertools.product((4096, 8192), (2, 4), (1, 2, 4), (16, 64)):
            K.TILES["sum_rows"], K.PROGRAMS_PER_SM["sum_rows"], K.SUM_FINISH_COLS = (e, wps), p, fc
            t = graph_seconds(timer, lambda x, g: K.sum_rows(g, torch.float16), sets, dev)
            print(f"  db as sum_rows (elements {e}, warps {wps}, programs per SM {p}, finishing columns {fc}):"
                  f" {t * 1e6:.1f} µs")
    finally:
        K.TILES["sum_rows"], K.PROGRAMS_PER_SM["sum_rows"], K.SUM_FINISH_COLS = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="fewer launch shapes")
    ap.add_argument("--part", choices=("all", "elementwise", "linear", "ops"), default="all")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("kernel_sweep.py times CUDA kernels: no CUDA device here")
    dev = torch.device("cuda")
    timer = Timer(dev)
    print(f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}; {timer.method} of CUDA graphs, per call")
    if args.part in ("all", "elementwise"):
        print("\nop rows (autograd fwd+bwd through the custom ops) with the launch shapes of muse.kernels:")
        op_rows_now(args.rows, args.d, timer, dev)
        apply(elementwise(args.rows, args.d, timer, dev, args.quick))
        print("op rows with the fastest launch shapes above:")
        op_rows_now(args.rows, args.d, timer, dev)
    if args.part in ("all", "linear"):
        linear_backward(args.rows, args.d, timer, dev)
    if args.part == "ops":  # the partial sums' last step as a kernel or as torch's sum and cast, alternating
        saved = K.PARTIALS_BY_KERNEL
        try:
            for by_kernel in (True, False, True, False):
                K.PARTIALS_BY_KERNEL = by_kernel
                print(f"\nop rows, partial rows summed by {'the finishing kernel' if by_kernel else 'torch'}:")
                op_rows_now(args.rows, args.d, timer, dev)
                t = graph_seconds(timer, lambda g: K.sum_rows(g, torch.float16),
                                  _rotation(lambda: (torch.randn(2, args.rows, args.d, device=dev).half(),), dev,
                                            4 * args.rows * args.d), dev)
                print(f"  sum_rows (db): {t * 1e6:.1f} µs")
        finally:
            K.PARTIALS_BY_KERNEL = saved


if __name__ == "__main__":
    main()
