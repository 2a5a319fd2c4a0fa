"""Compiled training (model + loss as one graph, CUDA graphs) with the loss's chunk loops as custom ops
vs traced as ordinary ops, and with two chunk budgets: train tok/s and the step's CUDA peak.

    python scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 [--impls fused,chunked-tokens]

Each variant is traced afresh (``torch._dynamo.reset()``); MUSE_LOSS_OPAQUE=0 traces the loops;
the "full" variant is the full-logits loss, the ratio's reference, in the same process; the chunk
bodies (log-sum-exp, softmax gradient) run as muse's Triton kernels or as nested torch.compile'd
functions; every variant sets MUSE_KERNELS_IN_COMPILE: the last runs layer_norm and modReLU as Triton
kernels inside the graph (the library's default since the twelfth session), the others leave them to the compiler. Prints one JSON line per variant; ``--profile 1,2`` adds those variants' ten costliest GPU
kernels (one compiled step without CUDA graphs, under torch.profiler) and how many launches were Triton.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import muse.train.loss as L
from benchmarks import measure
from muse.models import build_model

# (loops, MUSE_LOSS_OPAQUE, CHUNK_BUDGET_FRACTION, chunk bodies: Triton kernels or nested torch.compile,
#  MUSE_KERNELS_IN_COMPILE: the element-wise ops whose Triton kernels run inside the compiled graph)
VARIANTS = (("full", "1", 16, "-", ""), ("custom-op", "1", 16, "kernels", ""), ("custom-op", "1", 16, "compiled", ""),
            ("traced", "0", 16, "-", ""), ("custom-op", "1", 8, "kernels", ""), ("custom-op", "1", 4, "kernels", ""),
            ("traced", "0", 8, "-", ""), ("custom-op", "1", 16, "kernels", "layer_norm,modrelu"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stage1")
    p.add_argument("--preset", default="seed")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", default="0,1,2,3,4,5", help="indices into " + str(VARIANTS))
    p.add_argument("--profile", default="", help="indices of the variants whose costliest kernels to list")
    p.add_argument("--impls", default="fused", help="comma-separated loss paths, each run over every variant "
                   "(fused: the model's own; chunked: vocabulary chunks, 4 head GEMMs; chunked-tokens: token "
                   "chunks with the gradients formed in forward, 3 head GEMMs)")
    args = p.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(args.model, args.preset, device=dev)
    use_kernels = L._use_kernels
    profiled = {int(i) for i in args.profile.split(",") if i}
    runs = [(impl, int(i)) for impl in args.impls.split(",") for i in args.variants.split(",")]
    for impl, i in runs:
        loops, opaque, fraction, bodies, in_compile = VARIANTS[i]
        os.environ["MUSE_LOSS_OPAQUE"] = opaque
        os.environ["MUSE_KERNELS_IN_COMPILE"] = in_compile
        L.CHUNK_BUDGET_FRACTION = fraction
        L._use_kernels = use_kernels if bodies != "compiled" else (lambda hidden, weight: False)
        torch._dynamo.reset()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        loss = "full" if loops == "full" else "fused"
        tp = measure.throughput(model, args.batch, args.seq, dev, args.steps, warmup=2, loss=loss, impl=impl,
                                compiled=True, compile_mode="reduce-overhead")
        peak = torch.cuda.max_memory_allocated() - before
        print(json.dumps({"model": args.model, "preset": args.preset, "batch": args.batch, "seq": args.seq,
                          "impl": measure.resolve_impl(model.lm_head.weight.dtype, impl), "loops": loops, "chunk_budget_fraction": fraction, "chunk_bodies": bodies,
                          "kernels_in_compile": in_compile or "none", "train_tok_s": round(tp["tokens_per_second"], 1),
                          "peak_above_start_MiB (warm-up, compile and graph pools included)": round(peak / 2**20, 1)}),
              flush=True)
        if i in profiled:
            torch._dynamo.reset()
            print(json.dumps({"loops": loops, "chunk_budget_fraction": fraction, "chunk_bodies": bodies,
                              **kernel_profile(model, args.batch, args.seq, dev, loss, impl)}), flush=True)


def kernel_profile(model, batch: int, seq: int, dev: torch.device, loss: str, impl: str = "fused") -> dict:
    """One compiled training step (no CUDA graphs) after two warm-up steps, under torch.profiler:
    the ten kernels with the most GPU time, and how many launches were inductor/triton kernels."""
    from torch.profiler import ProfilerActivity, profile

    step = measure._compiled_step(model, loss, measure.resolve_impl(model.lm_head.weight.dtype, impl))
    inputs = torch.randint(0, model.config.vocab_size, (batch, seq), device=dev)
    model.train()
    for _ in range(2):
        step(inputs, inputs).backward()
        model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(inputs, inputs).backward()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    rows.sort(key=lambda e: -e.self_device_time_total)
    triton = sum(e.count for e in rows if e.key.startswith("triton"))
    return {"gpu_ms_total": round(sum(e.self_device_time_total for e in rows) / 1e3, 3),
            "launches": sum(e.count for e in rows), "triton_launches": triton,
            "top": [[e.key[:70], e.count, round(e.self_device_time_total / 1e3, 3)] for e in rows[:10]]}


if __name__ == "__main__":
    main()
