"""The complex GEMM kernel builds for an H100/H200 (sm_90) without a GPU, for every autotune config and
the three layouts ``linear`` launches (forward, dx, dW): Triton's NVIDIA backend lowers it to PTX and
ptxas to a cubin, and the PTX shows what the speed depends on -- wgmma (Hopper tensor cores) and
cp.async loads (the software pipeline), within the H200's 227 KiB of shared memory; and ptxas -v keeps the
wgmma pipeline asynchronous (it reports when it serialises it).  The build gets the
divisibility hints a real launch gets (16-byte aligned pointers, sizes and strides multiples of 16:
without them Triton cannot pipeline the loads).  It runs in a subprocess without ``TRITON_INTERPRET``:
Triton fixes interpreter mode when it is first imported."""

from __future__ import annotations

import json
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
import json
import os
import re
import subprocess
import tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource
from muse.kernels import _triton

NAMES = ["a_ptr", "b_ptr", "bias_ptr", "c_ptr", "M", "N", "K", "k_per", "s_ap", "s_am", "s_ak", "s_bp", "s_bk", "s_bn",
         "s_biasp", "s_biasn", "s_cs", "s_cp", "s_cm", "s_cn"]
FLAGS = ["CONJ_A", "CONJ_B", "HAS_BIAS", "WHILE_LOOP", "NEG_ACC", "BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]
# (flags, the strides equal to 1 (Triton specialises them), output dtype): y = x W^T + b, dx = dy conj(W),
# dW = dy^T conj(x) into the fp32 split-K partials
CASES = {"forward": (dict(CONJ_A=False, CONJ_B=False, HAS_BIAS=True), ("s_ak", "s_bk", "s_biasn", "s_cn"), "*fp16"),
         "dx": (dict(CONJ_A=False, CONJ_B=True, HAS_BIAS=False), ("s_ak", "s_bn", "s_cn"), "*fp16"),
         "dW": (dict(CONJ_A=False, CONJ_B=True, HAS_BIAS=False), ("s_am", "s_bn", "s_cn"), "*fp32")}
found = []
for case, (flags, ones, out) in CASES.items():
    for cfg in _triton.CMM_CONFIGS:
        signature = {n: "i32" for n in NAMES}
        signature.update(a_ptr="*fp16", b_ptr="*fp16", bias_ptr="*fp16", c_ptr=out)
        signature.update({n: "constexpr" for n in (*ones, *FLAGS)})
        constexprs = dict(flags, WHILE_LOOP=False, NEG_ACC=_triton.CMM_NEG_ACC, GROUP_M=_triton.CMM_GROUP_M, **cfg.kwargs, **{n: 1 for n in ones})
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(NAMES) if signature[n] != "constexpr"}
        src = ASTSource(fn=_triton._cmm_kernel, signature=signature, constexprs=constexprs, attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
        ptx = k.asm["ptx"]
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(ptx)
        report = subprocess.run([get_ptxas(90).path, "-v", "--gpu-name", "sm_90a", f.name, "-o", os.devnull],
                                capture_output=True, text=True).stderr  # Triton's bundled ptxas
        os.unlink(f.name)
        regs = re.search(r"Used (\\d+) registers", report)
        spill = re.search(r"(\\d+) bytes spill stores", report)
        found.append({"case": case, "config": str(cfg), "cubin": len(k.asm["cubin"]) > 0,
                      "wgmma": "wgmma.mma_async" in ptx, "cp_async": "cp.async" in ptx, "shared": k.metadata.shared,
                      "serialized": "serialized" in report, "registers": regs and int(regs.group(1)),
                      "spilled": spill and int(spill.group(1))})
print(json.dumps(found))
"""


def test_complex_mm_builds_for_sm90_with_wgmma_and_a_pipeline():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", BUILD], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert {f["case"] for f in found} == {"forward", "dx", "dW"}
    for f in found:
        assert f["cubin"] and f["wgmma"] and f["cp_async"], f
        assert f["shared"] <= 227 * 1024, f
        assert not f["serialized"], f  # a negated operand tile, or an fp32 store straight from the accumulators
