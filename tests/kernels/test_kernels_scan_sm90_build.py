"""The scan kernels build for an H100/H200 (sm_90) without a GPU: Triton's NVIDIA backend lowers them to
PTX and ptxas to a cubin, so a lowering error shows up here rather than at first contact with a GPU
(the interpreter tests run the same source, but not this path).  The build runs in a subprocess
without ``TRITON_INTERPRET``: Triton fixes interpreter mode when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from muse import kernels

if not kernels.HAS_TRITON:
    pytest.skip("triton is not installed (pip install -e '.[triton]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
BUILD = """
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from muse.kernels import _triton

P, N, F, C = "*fp32", "i32", "fp32", "constexpr"
HEBB = dict(q_ptr=P, k_ptr=P, v_ptr=P, l_ptr=P, w0_ptr=P)
BK, BV, HEBB_OPTIONS = _triton._hebb_blocks(64, 64)  # the blocks and launch options the host picks at d_head = 64
CASES = [
    ("_bk_forward_kernel", dict(a_ptr=P, g0_ptr=P, g_ptr=P, n_lanes=N, n_steps=N, stride_lane=N, stride_step=N,
                                z_re=F, z_im=F, HAS_G0=C, BLOCK=C), dict(HAS_G0=True, BLOCK=_triton.BK_BLOCK), {"num_warps": 1}),
    ("_bk_backward_kernel", dict(g_ptr=P, dg_ptr=P, da_ptr=P, dg0_ptr=P, n_lanes=N, n_steps=N, BLOCK=C),
     dict(BLOCK=_triton.BK_BLOCK), {"num_warps": 1}),
    ("_hebb_forward_kernel", dict(**HEBB, y_ptr=P, ws_ptr=P, n_steps=N, d_k=N, d_v=N, eta=F, HAS_W0=C, BT=C, BK=C,
                                  BV=C), dict(HAS_W0=True, BT=_triton.HEBB_CHUNK, BK=BK, BV=BV), HEBB_OPTIONS),
    ("_hebb_backward_kernel", dict(**HEBB, dy_ptr=P, dws_ptr=P, dq_ptr=P, dk_ptr=P, dv_ptr=P, dw0_ptr=P, n_steps=N,
                                   d_k=N, d_v=N, eta=F, HAS_W0=C, HAS_DWS=C, BT=C, BK=C, BV=C),
     dict(HAS_W0=True, HAS_DWS=True, BT=_triton.HEBB_CHUNK, BK=BK, BV=BV), HEBB_OPTIONS),
]
built = []
for name, signature, constexprs, options in CASES:
    src = ASTSource(fn=getattr(_triton, name), signature=signature, constexprs=constexprs)
    out = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    assert len(out.asm["cubin"]) > 0 and ".target sm_90" in out.asm["ptx"], name
    assert "maxnreg" not in options or f".maxnreg {options['maxnreg']}" in out.asm["ptx"], name
    built.append(name)
print(json.dumps(built))
"""


def test_scan_kernels_build_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", BUILD], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith('"_hebb_backward_kernel"]'), run.stdout
