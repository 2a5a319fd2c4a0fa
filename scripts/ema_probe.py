"""Probe (docs/experiments.md section 22): does an exponential moving average of the weights help Stage 1 more than
Phase 2?

Runs `muse train` with the given arguments while keeping, after every optimizer step, fp32 moving averages of the
model's parameters for each decay in --ema (the usual warm-up: decay_t = min(d, (1 + t) / (10 + t))). After training
(and the trainer's own final evaluation) each average is loaded into the model, rounded once to the parameter's dtype,
and scored with the run's final-evaluation settings. The library is wrapped in this process only, e.g.

    PYTHONPATH=. python scripts/ema_probe.py --ema 0.9,0.95,0.98 -- train --model stage1 --preset mix-tiny \
        --device cpu --train-split valid --tokens 131072 --batch-size 4 ... --final-eval-tokens 32768 --eval-stride 128
"""
import argparse
import json

import torch

import muse.train.trainer as T
from muse.cli import main
from muse.train.evaluate import evaluate

parser = argparse.ArgumentParser()
parser.add_argument("--ema", default="0.9,0.95,0.98", help="comma-separated decays")
parser.add_argument("muse_args", nargs=argparse.REMAINDER)
args = parser.parse_args()
decays = [float(d) for d in args.ema.split(",")]
state: dict = {}
orig_step = T.Trainer.train_step


def train_step(self):
    out = orig_step(self)
    params = [p for p in self.model.parameters()]
    if "averages" not in state:
        state.update(trainer=self, t=0, averages={d: [p.detach().float().clone() for p in params] for d in decays})
    state["t"] += 1
    with torch.no_grad():
        for d, avg in state["averages"].items():
            rate = min(d, (1 + state["t"]) / (10 + state["t"]))
            for a, p in zip(avg, params, strict=True):
                a.mul_(rate).add_(p.detach().float(), alpha=1 - rate)
    return out


T.Trainer.train_step = train_step
muse_args = args.muse_args[1:] if args.muse_args[:1] == ["--"] else args.muse_args
if main(muse_args) != 0:
    raise SystemExit("muse train failed")
trainer = state["trainer"]
cfg, model = trainer.cfg, trainer.model
final = trainer.final_eval
rows = {"trained": {"loss": final["loss"], "ppl": final["ppl"]}}
trained = [p.detach().clone() for p in model.parameters()]
for d, avg in state["averages"].items():
    with torch.no_grad():
        for p, a in zip(model.parameters(), avg, strict=True):
            p.copy_(a.to(p.dtype))
    res = evaluate(model, trainer.data.eval, trainer.seq_len, cfg.eval_batch_size or cfg.batch_size,
                   stride=cfg.eval_stride, max_tokens=cfg.final_eval_tokens)
    rows[f"ema {d}"] = {"loss": res["loss"], "ppl": res["ppl"]}
with torch.no_grad():
    for p, t in zip(model.parameters(), trained, strict=True):
        p.copy_(t)
print(json.dumps({"model": cfg.model, "preset": cfg.preset, "seed": cfg.seed, "steps": state["t"], **rows}))
