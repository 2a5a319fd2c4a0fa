"""Single-stream greedy generation speed and memory per model (issue 12 item 5's target).

    python scripts/gen_speed.py --device cuda --preset seed --tokens 1000

Builds each model fresh (speed does not depend on the weights), generates ``--tokens`` tokens
after a 16-token prompt with ``muse.train.generate`` (eager), and prints one JSON line per model:
tokens/s, and ``torch.cuda.memory_allocated`` after 10 % and after all of the tokens (a state
that does not grow with the generated length keeps the two equal).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from muse.models import build_model
from muse.train.generate import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--models", default="stage1:mix,stage1,gpt,phase2")
    args = p.parse_args()
    dev = torch.device(args.device)
    for spec in args.models.split(","):
        name, _, preset = spec.partition(":")
        preset = preset or args.preset
        if preset == "mix" and args.preset != "seed":
            preset = "mix-tiny"
        torch.manual_seed(0)
        model = build_model(name, preset, device=dev).eval()
        prompt = torch.randint(0, model.config.vocab_size, (1, 16), device=dev)
        n = min(args.tokens, model.config.max_seq_len - 16)
        mem, t0 = [], None
        with torch.no_grad():
            for i, _ in enumerate(generate(model, prompt, n, temperature=0.0)):
                if i == 0:
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                if dev.type == "cuda" and i + 1 in (max(n // 10, 1), n):
                    mem.append(torch.cuda.memory_allocated())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(json.dumps({"model": name, "preset": preset, "new_tokens": n, "tokens_per_s": round((n - 1) / dt, 1),
                          "memory_allocated_MiB_at_10pct_and_end": [round(m / 2**20, 1) for m in mem],
                          "step": type(model).step.__qualname__}), flush=True)


if __name__ == "__main__":
    main()
