"""Single-stream greedy generation speed and memory per model and decoding path (issue 12 item 5's target).

    python scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix,stage1,gpt

Builds each model fresh (speed does not depend on the weights) and generates ``--tokens`` tokens
after a 16-token prompt with ``muse.train.generate.generate``, once per path: ``step`` (the eager
incremental loop) and, for a model with ``decode_step`` (Stage 1), ``fast`` (the static step,
compiled unless ``--no-compile``, replayed from a CUDA graph on CUDA).  One JSON line per
(model, path): tokens/s after the first token (the prompt's prefill, the first token and the
fast path's setup excluded), ``setup_s`` (compile + warm-up + capture, reported apart), and
``torch.cuda.memory_allocated`` after 10 % and after all of the tokens (a state that does not
grow with the generated length keeps the two equal).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from muse.cli.train import parse_key_values
from muse.models import build_model
from muse.models.compile import synchronize
from muse.train.generate import generate, has_static_step


def measure(model, prompt: torch.Tensor, n: int, fast: bool, compile: bool | None) -> dict:
    """Generate ``n`` greedy tokens; tokens/s over tokens 2..n, setup time and memory checkpoints."""
    dev = prompt.device
    info: dict = {}
    mem, t0 = [], None
    for i, _ in enumerate(generate(model, prompt, n, temperature=0.0, fast=fast, compile=compile, info=info)):
        if i == 0:
            synchronize(dev)
            t0 = time.perf_counter()
        if dev.type == "cuda" and i + 1 in (max(n // 10, 1), n):
            mem.append(torch.cuda.memory_allocated(dev))
    synchronize(dev)
    dt = time.perf_counter() - t0
    return {"path": info["path"], "compiled": info["compiled"], "setup_s": round(info["setup_s"], 2),
            "new_tokens": n, "tokens_per_s": round((n - 1) / dt, 1) if n > 1 else None,
            "memory_allocated_MiB_at_10pct_and_end": [round(m / 2**20, 1) for m in mem]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--models", default="stage1:mix,stage1,gpt,phase2")
    p.add_argument("--paths", default="step,fast", help="comma-separated: step (eager loop), fast (static step)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a config field for every model built (VALUE parsed as JSON), e.g. pointer_dim=64")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the fast path's step (default: on for CUDA, off for CPU)")
    args = p.parse_args()
    overrides = parse_key_values(args.model_arg)
    dev = torch.device(args.device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    for spec in args.models.split(","):
        name, _, preset = spec.partition(":")
        preset = preset or args.preset
        if preset == "mix" and args.preset != "seed":
            preset = "mix-tiny"
        torch.manual_seed(0)
        model = build_model(name, preset, device=dev, **overrides).eval()
        prompt = torch.randint(0, model.config.vocab_size, (1, 16), device=dev)
        n = min(args.tokens, model.config.max_seq_len - 16)
        for path in args.paths.split(","):
            if path == "fast" and not has_static_step(model):
                continue  # no static step: only the eager loop exists
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            with torch.no_grad():
                row = measure(model, prompt, n, fast=path == "fast", compile=args.compile)
            print(json.dumps({"model": name, "preset": preset, "overrides": overrides, "device": device_name, **row}),
                  flush=True)


if __name__ == "__main__":
    main()
