"""Peak memory of one training step, eager against compiled (what `muse train --compile` runs), per model.

The eager figure is the Stage 1 criteria's measure (`benchmarks.measure.peak_memory`, fused loss); the compiled
one is `benchmarks.measure.compiled_peak_memory` (model + loss one graph). One JSON line per model, then the
Stage 1 / Phase 2 ratio in both modes.

    python scripts/compiled_step_memory.py --device cuda --preset seed --models stage1:mix-copy,stage1:mix,phase2:seed
    python scripts/compiled_step_memory.py --device cpu --preset tiny --backend aot_eager --seq 64
    python scripts/compiled_step_memory.py --device cuda --models stage1:mix --memory-budget 0.5 --time-steps 20
    python scripts/compiled_step_memory.py --device cuda --models stage1:mix --profile-steps 5

``--memory-budget`` sets ``torch._functorch.config.activation_memory_budget`` (1.0: the partitioner's default,
save what is cheapest in time; lower: recompute more, keep less) for the compiled step; ``--time-steps`` also times
that many compiled and eager steps (tokens/s of forward + fused loss + backward, no optimizer).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import torch
import torch._functorch.config as functorch_config

from benchmarks import measure
from muse.models import build_model
from muse.models.compile import set_memory_budget, synchronize
from muse.train.loss import compile_model_loss, model_loss


def steps_per_second(step, model, batch: int, seq: int, device: torch.device, n: int) -> float:
    """Tokens/s of ``n`` training steps (forward, loss, backward) after two warm ones."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1), generator=gen).to(device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    for _ in range(2):
        step(inputs, targets).backward()
    synchronize(device)
    t = time.perf_counter()
    for _ in range(n):
        step(inputs, targets).backward()
    synchronize(device)
    model.zero_grad(set_to_none=True)
    return n * batch * seq / (time.perf_counter() - t)


def kernel_table(step, model, batch: int, seq: int, device: torch.device, n: int, top: int) -> str:
    """torch.profiler's table of the device kernels of ``n`` training steps (after one warm step), by total time."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seq + 1), generator=torch.Generator().manual_seed(1))
    inputs, targets = ids[:, :-1].to(device), ids[:, 1:].to(device)
    step(inputs, targets).backward()
    synchronize(device)
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                           if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(n):
            step(inputs, targets).backward()
        synchronize(device)
    model.zero_grad(set_to_none=True)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=70)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="seed", help="the preset of a model named without one")
    p.add_argument("--models", default="stage1:mix-copy,stage1:mix,phase2", help="name[:preset],...")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=None, help="default: each model's max_seq_len")
    p.add_argument("--backend", default="inductor")
    p.add_argument("--out", default=None, help="also write the JSON lines here")
    p.add_argument("--memory-budget", type=float, default=None,
                   help="torch._functorch.config.activation_memory_budget for the compiled step (default: torch's)")
    p.add_argument("--time-steps", type=int, default=0, help="also time this many compiled and eager steps")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="also print the profiler's kernel table of this many compiled steps (to stderr)")
    p.add_argument("--profile-top", type=int, default=30, help="rows of that table")
    args = p.parse_args(argv)
    set_memory_budget(args.memory_budget)
    dev = torch.device(args.device)
    rows = {}
    for spec in args.models.split(","):
        name, _, preset = spec.partition(":")
        torch.manual_seed(0)
        model = build_model(name, preset or args.preset, device=dev)
        seq = args.seq or model.config.max_seq_len
        eager = measure.peak_memory(model, args.batch, seq, dev, 0, "fused", "fused")
        t = time.perf_counter()
        compiled = measure.compiled_peak_memory(model, args.batch, seq, dev, 0, backend=args.backend)
        rows[spec] = {"model": spec, "batch": args.batch, "seq": seq, "eager_mib": eager["peak_bytes"] / 2**20,
                      "eager_loss_path": eager["loss_path"], "compiled_mib": compiled["peak_bytes"] / 2**20,
                      "compiled_loss_path": compiled["loss_path"], "before_mib": compiled["before_bytes"] / 2**20,
                      "measure": compiled["measure"], "compile_and_measure_s": time.perf_counter() - t,
                      "memory_budget": functorch_config.activation_memory_budget}
        if args.time_steps:
            model.train()
            rows[spec]["compiled_tok_s"] = steps_per_second(compile_model_loss(model, backend=args.backend), model,
                                                            args.batch, seq, dev, args.time_steps)
            rows[spec]["eager_tok_s"] = steps_per_second(functools.partial(model_loss, model), model, args.batch, seq,
                                                         dev, args.time_steps)
        if args.profile_steps:
            model.train()
            print(f"{spec}: compiled step kernels, {args.profile_steps} steps", file=sys.stderr)
            print(kernel_table(compile_model_loss(model, backend=args.backend), model, args.batch, seq, dev,
                               args.profile_steps, args.profile_top), file=sys.stderr, flush=True)
        print(json.dumps(rows[spec]), flush=True)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    p2 = next((r for k, r in rows.items() if k.startswith("phase2")), None)
    for k, r in rows.items():
        if p2 is not None and k.startswith("stage1"):
            print(f"{k} / phase2: eager {r['eager_mib'] / p2['eager_mib']:.3f}, "
                  f"compiled {r['compiled_mib'] / p2['compiled_mib']:.3f}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows.values())


if __name__ == "__main__":
    main()
