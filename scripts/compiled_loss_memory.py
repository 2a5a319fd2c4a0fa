"""Peak allocator bytes of the chunked LM loss (forward + backward), eager vs compiled as one graph (CPU).

Each chunk loop is one opaque custom op under torch.compile (muse/train/loss.py), so compiled
code holds one chunk at a time, as eager code does.

    python scripts/compiled_loss_memory.py --impl chunked-tokens --chunk 256
    python scripts/compiled_loss_memory.py --impl chunked --chunk 1024

The measure is torch.profiler's allocator events (``profile_memory=True``): every allocation and
free, including those inside compiled code, which a dispatch-mode tracker cannot see.
"""

from __future__ import annotations

import argparse

import torch

import muse.complex as C
from benchmarks.memory import allocator_peak_bytes
from muse.train.loss import linear_cross_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", default="chunked-tokens", choices=["chunked", "chunked-tokens"])
    p.add_argument("--chunk", type=int, default=256, help="tokens (chunked-tokens) or vocabulary rows (chunked)")
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--vocab", type=int, default=8000)
    args = p.parse_args()
    C.set_gemm_policy()
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(args.tokens, args.d, generator=gen, requires_grad=True)
    w = torch.randn(args.vocab, args.d, generator=gen, requires_grad=True)
    b = torch.randn(args.vocab, generator=gen, requires_grad=True)
    t = torch.randint(0, args.vocab, (args.tokens,), generator=gen)

    def loss(h, w, b, t):
        return linear_cross_entropy(h, w, t, b, impl=args.impl, chunk_size=args.chunk)

    full = args.tokens * args.vocab * 4
    for mode, fn in (("eager", loss), ("compiled", torch.compile(loss, fullgraph=True))):
        fn(h, w, b, t).backward()  # warm-up (compiles)
        h.grad = w.grad = b.grad = None
        peak = allocator_peak_bytes(lambda fn=fn: fn(h, w, b, t).backward())
        h.grad = w.grad = b.grad = None
        print(f"{args.impl}, chunk {args.chunk}, {mode}: peak {peak / 2**20:.1f} MiB above the start "
              f"(the full fp32 logits: {full / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
