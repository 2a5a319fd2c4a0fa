"""Time of the copy path's full-vocabulary mixture (``PointerMixture.mix``, what ``model(ids)`` adds).

    PYTHONPATH=. python scripts/pointer_mix_speed.py [--batch 2 --seq 512 --repeats 5]

Builds ``mix-copy-tiny`` at the GPT-2 vocabulary with max_seq_len = --seq, runs the model once for the
head's input and logits, then times ``mix`` alone (median of --repeats after two warm-up calls) and prints
one JSON line.  Speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from muse.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(args.device)
    model = build_model("stage1", "mix-copy-tiny", max_seq_len=args.seq, device=dev).eval()
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=dev)
    times = []
    with torch.no_grad():
        h = model(ids, return_hidden=True)
        logits = model.lm_head(h)
        q, k, theta, gate = model.pointer.project(h)
        for i in range(args.repeats + 2):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            model.pointer.mix(q, k, theta, gate, ids, logits)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    print(json.dumps({"batch": args.batch, "seq": args.seq, "vocab": model.config.vocab_size, "device": str(dev),
                      "torch": torch.__version__, "mix_seconds_median": statistics.median(times)}))


if __name__ == "__main__":
    main()
