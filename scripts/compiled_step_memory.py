"""Peak memory of one training step, eager against compiled (what `muse train --compile` runs), per model.

The eager figure is the Stage 1 criteria's measure (`benchmarks.measure.peak_memory`, fused loss); the compiled
one is `benchmarks.measure.compiled_peak_memory` (model + loss one graph). One JSON line per model, then the
Stage 1 / Phase 2 ratio in both modes.

    python scripts/compiled_step_memory.py --device cuda --preset seed --models stage1:mix-copy,stage1:mix,phase2:seed
    python scripts/compiled_step_memory.py --device cpu --preset tiny --backend aot_eager --seq 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks import measure
from muse.models import build_model


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="seed", help="the preset of a model named without one")
    p.add_argument("--models", default="stage1:mix-copy,stage1:mix,phase2", help="name[:preset],...")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=None, help="default: each model's max_seq_len")
    p.add_argument("--backend", default="inductor")
    p.add_argument("--out", default=None, help="also write the JSON lines here")
    args = p.parse_args(argv)
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
                      "measure": compiled["measure"], "compile_and_measure_s": time.perf_counter() - t}
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
