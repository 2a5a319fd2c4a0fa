"""The LM head's GEMM alone at the seed size, in several forms, timed in alternation on one GPU (issue 11).

    python scripts/head_gemm_ab.py [--tokens 4096] [--d 512] [--vocab 50257] [--rounds 5] [--out FILE.json]

Why: the compiled inference profile (s36b) put Stage 1's head GEMM (fp16, with bias: ``addmm``) at 351.8 us a call
and the GPT's (bf16, no bias: ``mm``) at 335.4 us, same shape.  The forms: fp16 / bf16, with / without the bias
epilogue, the bias folded into the GEMM as an extra K column (h gets a column of ones; K padded to a multiple of 8
or 64), and each under the cuBLAS and cuBLASLt back ends.  Each form is captured in a CUDA graph of ``--calls``
calls and replayed ``--rounds`` times in turn; the median per call is reported with the largest difference of its
output from the fp16 addmm's.  A diagnostic for docs/performance.md; it says nothing on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def _forms(tokens: int, d: int, vocab: int, device: str):
    rows = -(-vocab // 64) * 64
    g = torch.Generator(device="cpu").manual_seed(0)
    h32 = torch.randn(tokens, d, generator=g) / d**0.5
    w32 = torch.randn(rows, d, generator=g) / d**0.5
    b32 = torch.randn(rows, generator=g) * 0.1
    w32[vocab:] = 0
    b32[vocab:] = 0
    forms = {}
    for dt, tag in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        h, w, b = (t.to(device, dt) for t in (h32, w32, b32))
        forms[f"{tag} addmm (bias epilogue)"] = (lambda h=h, w=w, b=b: F.linear(h, w, b))
        forms[f"{tag} mm (no bias)"] = (lambda h=h, w=w: F.linear(h, w))
        for k in (d + 8, d + 64):
            ha = torch.zeros(tokens, k, dtype=dt, device=device)
            ha[:, :d] = h
            ha[:, d] = 1
            wa = torch.zeros(rows, k, dtype=dt, device=device)
            wa[:, :d] = w
            wa[:, d] = b
            forms[f"{tag} mm, bias as column {d} of K={k}"] = (lambda ha=ha, wa=wa: F.linear(ha, wa))
    return forms, vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("head_gemm_ab.py needs a CUDA GPU")
    results = {}
    for backend in ("cublas", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(backend)
        forms, vocab = _forms(args.tokens, args.d, args.vocab, "cuda")
        ref = forms["fp16 addmm (bias epilogue)"]().float()[:, :vocab]
        graphs = {}
        for name, fn in forms.items():
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    out = fn()
            torch.cuda.current_stream().wait_stream(s)
            diff = (out.float()[:, :vocab] - ref).abs().max().item()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(args.calls):
                    fn()
            graphs[name] = (graph, diff)
        times = {name: [] for name in graphs}
        for _ in range(args.rounds):
            for name, (graph, _) in graphs.items():
                graph.replay()
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                graph.replay()
                end.record()
                torch.cuda.synchronize()
                times[name].append(start.elapsed_time(end) * 1e3 / args.calls)
        for name, (_, diff) in graphs.items():
            med = statistics.median(times[name])
            key = f"{backend}: {name}"
            results[key] = {"us_per_call": med, "rounds_us": times[name], "max_abs_diff_vs_fp16_addmm": diff}
            print(f"{key:60s} {med:8.1f} us  (max |diff| {diff:.3g})", flush=True)
        del graphs
        torch.cuda.empty_cache()
    torch.backends.cuda.preferred_blas_library("cublas")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args),
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
