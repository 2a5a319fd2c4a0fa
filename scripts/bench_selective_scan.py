"""The selective scan's Triton kernels alone: forward and backward times at the mix preset's shapes.

    python scripts/bench_selective_scan.py                       # CUDA: B 4 and 8, S 1024, d_state 512
    python scripts/bench_selective_scan.py --batch 8 --seq 4096
    python scripts/bench_selective_scan.py --block 8 --block 16 --block 32 --tile 32 --tile 64 --tile 128

Times ``muse.kernels.selective_scan_fwd`` and ``_bwd`` (float32 planes, log-decays of a few tenths of a nat a
token, as the layer gives) with ``triton.testing.do_bench`` (median), and the bytes they move against the
device's copy bandwidth measured in the same process, so a change of kernel can be judged by running this
script in both trees.  ``--block`` / ``--tile`` sweep the kernels' channels per program and tokens per tile
(``muse.kernels._triton.SEL_BLOCK`` / ``SEL_CHUNK``; powers of two).  Prints one JSON line per shape and setting.
"""

from __future__ import annotations

import argparse
import json

import torch

from muse import kernels


def time_shape(batch: int, seq: int, state: int, do_bench) -> dict:
    """Median ms and GB/s of one forward and one backward at (batch, seq, state)."""
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (batch, seq, state)
    x = torch.randn((2, *shape), device=dev, generator=g)
    ld = -0.5 * torch.rand(shape, device=dev, generator=g)
    h0 = torch.randn((2, batch, state), device=dev, generator=g)
    dy, dhs = torch.randn_like(x), torch.randn_like(h0)
    y, _ = kernels.selective_scan_fwd(x, ld, h0)
    fwd = do_bench(lambda: kernels.selective_scan_fwd(x, ld, h0), return_mode="median")
    bwd = do_bench(lambda: kernels.selective_scan_bwd(ld, y, h0, dy, dhs), return_mode="median")
    n = x[0].numel()
    fwd_bytes = 4 * n * (2 + 1 + 2)  # x, l in; y out
    bwd_bytes = 4 * n * (1 + 2 + 2 + 2 + 1)  # l, y, dy in; dx, dl out
    return {"batch": batch, "seq": seq, "state": state, "fwd_ms": round(fwd, 4), "bwd_ms": round(bwd, 4),
            "fwd_GBps": round(fwd_bytes / fwd / 1e6, 1), "bwd_GBps": round(bwd_bytes / bwd / 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, action="append")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--state", type=int, default=512)
    p.add_argument("--block", type=int, action="append", help="channels per program (default: the kernel's)")
    p.add_argument("--tile", type=int, action="append", help="tokens per tile (default: the kernel's)")
    args = p.parse_args()
    if not torch.cuda.is_available() or not kernels.HAS_TRITON:
        raise SystemExit("needs a CUDA GPU and triton")
    from triton.testing import do_bench

    big = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    copy_ms = do_bench(big.clone, return_mode="median")
    copy_gbs = round(2 * big.numel() * 4 / copy_ms / 1e6, 1)
    del big
    from muse.kernels import _triton

    for batch in args.batch or [4, 8]:
        for block in args.block or [None]:
            for tile in args.tile or [None]:
                if block is not None:
                    _triton.SEL_BLOCK = block
                if tile is not None:
                    _triton.SEL_CHUNK = tile
                row = time_shape(batch, args.seq, args.state, do_bench)
                setting = {"block": _triton.SEL_BLOCK, "tile": getattr(_triton, "SEL_CHUNK", None)}
                print(json.dumps({**row, **setting, "copy_GBps": copy_gbs,
                                  "device": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
