"""Peak allocator bytes of the chunked LM loss (forward + backward), eager vs compiled as one graph (CPU).

Each chunk loop is one opaque custom op under torch.compile (muse/train/loss.py), so compiled
code holds one chunk at a time, as eager code does.

    python scripts/compiled_loss_memory.py --impl chunked-tokens --chunk 256
    python scripts/compiled_loss_memory.py --impl chunked --chunk 1024
    python scripts/compiled_loss_memory.py --device cuda --impl chunked --dtype float16 \
        --tokens 4096 --d 512 --vocab 50257 --chunk 0

The measure is torch.profiler's allocator events on CPU (``profile_memory=True``): every allocation
and free, including those inside compiled code, which a dispatch-mode tracker cannot see; on CUDA
``torch.cuda.max_memory_allocated`` above what was allocated before the step.
"""

from __future__ import annotations

import argparse

import torch

import muse.complex as C
from benchmarks.memory import allocator_peak_bytes
from muse.train.loss import linear_cross_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", default="chunked-tokens", choices=["chunked", "chunked-tokens", "torch-native"])
    p.add_argument("--chunk", type=int, default=256,
                   help="tokens (chunked-tokens) or vocabulary rows (chunked); 0: the automatic size")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    C.set_gemm_policy()
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    h, w, b = (torch.randn(*shape, generator=gen).to(dev, dtype).requires_grad_()
               for shape in ((args.tokens, args.d), (args.vocab, args.d), (args.vocab,)))
    t = torch.randint(0, args.vocab, (args.tokens,), generator=gen).to(dev)

    def loss(h, w, b, t):
        return linear_cross_entropy(h, w, t, b, impl=args.impl, chunk_size=args.chunk or None)

    def cuda_peak(fn) -> int:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
        fn()
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) - start

    measure = cuda_peak if dev.type == "cuda" else allocator_peak_bytes
    full = args.tokens * args.vocab * 4
    for mode, fn in (("eager", loss), ("compiled", torch.compile(loss, fullgraph=True))):
        fn(h, w, b, t).backward()  # warm-up (compiles)
        h.grad = w.grad = b.grad = None
        peak = measure(lambda fn=fn: fn(h, w, b, t).backward())
        h.grad = w.grad = b.grad = None
        print(f"{args.impl}, {args.dtype}, N {args.tokens}, d {args.d}, V {args.vocab}, chunk {args.chunk or 'auto'}, "
              f"{mode} on {dev.type}: peak {peak / 2**20:.1f} MiB above the start "
              f"(the full fp32 logits: {full / 2**20:.1f} MiB)", flush=True)


if __name__ == "__main__":
    main()
