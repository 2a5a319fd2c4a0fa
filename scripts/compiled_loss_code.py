"""Print inductor's code for the chunked LM loss compiled as one graph (CPU), to see what is alive when.

    TORCH_LOGS=output_code python scripts/compiled_loss_code.py --impl chunked-tokens --chunk 64 2> code.log

Each chunk's logits are one ``extern_kernels.addmm(..., out=bufN)``: in eager code at most one chunk's
logits (and its softmax gradient) is alive; in the generated code, read where each ``bufN`` is allocated
and where it is ``del``-eted.
"""

from __future__ import annotations

import argparse

import torch

import muse.complex as C
from muse.train.loss import linear_cross_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", default="chunked-tokens", choices=["chunked", "chunked-tokens"])
    p.add_argument("--chunk", type=int, default=64, help="tokens (chunked-tokens) or vocabulary rows (chunked)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--vocab", type=int, default=1000)
    args = p.parse_args()
    C.set_gemm_policy()
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(args.tokens, args.d, generator=gen, requires_grad=True)
    w = torch.randn(args.vocab, args.d, generator=gen, requires_grad=True)
    b = torch.randn(args.vocab, generator=gen, requires_grad=True)
    t = torch.randint(0, args.vocab, (args.tokens,), generator=gen)

    def loss(h, w, b, t):
        return linear_cross_entropy(h, w, t, b, impl=args.impl, chunk_size=args.chunk)

    torch.compile(loss, fullgraph=True)(h, w, b, t).backward()


if __name__ == "__main__":
    main()
