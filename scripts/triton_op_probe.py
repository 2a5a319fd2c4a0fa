"""Can a ``torch.library.triton_op`` kernel be compiled where CI runs the kernels (the CPU, ``TRITON_INTERPRET=1``)?

A one-line Triton kernel as a ``triton_op`` launched through ``wrap_triton``, called eagerly and then inside
``torch.compile(fullgraph=True)`` with each backend named on the command line:
    TRITON_INTERPRET=1 python scripts/triton_op_probe.py aot_eager inductor
(docs/results.md, forty-third session, item 9)."""
import sys

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton


@triton.jit
def _add_one(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(y_ptr + i, tl.load(x_ptr + i, mask=m) + 1.0, mask=m)

@triton_op("probe::add_one", mutates_args=())
def add_one(x: torch.Tensor) -> torch.Tensor:
    y = torch.empty_like(x)
    n = x.numel()
    wrap_triton(_add_one)[(triton.cdiv(n, 64),)](x, y, n, BLOCK=64)
    return y

x = torch.arange(100, dtype=torch.float32)
print("eager", torch.equal(add_one(x), x + 1))
for backend in sys.argv[1:]:
    try:
        f = torch.compile(lambda t: add_one(t) * 2, backend=backend, fullgraph=True)
        print(backend, torch.equal(f(x), (x + 1) * 2))
    except Exception as e:
        print(backend, "FAILED", type(e).__name__, str(e).splitlines()[0][:300])
