"""Probe (docs/experiments.md section 23): does label smoothing help Stage 1 more than Phase 2?

Runs `muse train` with its training loss replaced by the label-smoothed cross-entropy
``(1 - eps) * CE + eps * mean_v(lse - z_v)``, which equals ``CE + eps * (z_y - mean_v z_v)``: the trainer's fused loss
plus two dot products per token (the target row of the head and the head's mean row), so no logits are materialised.
Evaluation (the trainer's and the final one) keeps the plain cross-entropy. Only for models without a copy path. The
library is wrapped in this process only, e.g.

    PYTHONPATH=. python scripts/smoothing_probe.py --eps 0.1 -- train --model stage1 --preset mix-tiny \
        --device cpu --train-split valid --tokens 131072 --batch-size 4 ... --final-eval-tokens 32768 --eval-stride 128
"""
import argparse
import json

import torch
import torch.nn.functional as F

import muse.train.loss as L
import muse.train.trainer as T
from muse.cli import main
from muse.models.compile import unwrap
from muse.train.loss import IGNORE_INDEX, head_loss

parser = argparse.ArgumentParser()
parser.add_argument("--eps", type=float, required=True, help="smoothing weight in [0, 1)")
parser.add_argument("--prior", choices=["uniform", "unigram"], default="uniform",
                    help="the smoothing target: uniform over the vocabulary (label smoothing) or the training text's "
                         "unigram distribution (section 24)")
parser.add_argument("muse_args", nargs=argparse.REMAINDER)
args = parser.parse_args()
if not 0.0 <= args.eps < 1.0:
    raise SystemExit(f"--eps must be in [0, 1), got {args.eps}")


def smoothed_loss(model, input_ids, targets, reduction="mean", impl="auto", chunk_size=None, keep_logits=False,
                  label_smoothing=0.0):
    if label_smoothing:
        raise SystemExit("the probe smooths the loss itself: leave muse train's --label-smoothing at 0")
    core = unwrap(model)
    if getattr(core, "pointer", None) is not None:
        raise SystemExit("the probe covers models without a copy path")
    hidden = model(input_ids, return_hidden=True)
    ce = head_loss(core, hidden, input_ids, targets, reduction, impl, chunk_size, keep_logits)
    if not core.training or args.eps == 0.0:
        return ce
    if reduction != "mean":
        raise SystemExit(f"the probe smooths the mean loss only, got reduction={reduction!r}")
    head = core.lm_head
    w, h = head.weight.float(), hidden.float()
    scored = targets != IGNORE_INDEX
    t = torch.where(scored, targets, 0)
    u = prior(w.shape[0], w.device)
    # F.embedding rather than w[t]: indexing's backward (index_put_ with accumulate) adds repeated rows in a
    # thread-dependent order on CPU, so runs through w[t] differ in the last bit and drift apart (docs/experiments.md §29)
    gap = (h * F.embedding(t, w)).sum(-1) - h @ (u @ w)
    if getattr(head, "bias", None) is not None:
        b = head.bias.float()
        gap = gap + F.embedding(t, b[:, None])[..., 0] - u @ b
    return ce + args.eps * (gap * scored).sum() / scored.sum()


def prior(vocab: int, device) -> torch.Tensor:
    """(vocab,) smoothing target: uniform, or the training tokens' unigram frequencies (computed once)."""
    if args.prior == "uniform":
        return torch.full((vocab,), 1.0 / vocab, device=device)
    if "unigram" not in state:
        counts = torch.bincount(torch.as_tensor(state["trainer"].data.train.astype("int64")), minlength=vocab)
        state["unigram"] = (counts[:vocab].double() / counts[:vocab].sum()).float().to(device)
    return state["unigram"]


state: dict = {}
orig_step = T.Trainer.train_step


def train_step(self):
    state["trainer"] = self
    return orig_step(self)


# the eager step calls the trainer's name, the compiled step the loss module's; evaluation keeps its own (plain CE)
T.model_loss, L.model_loss, T.Trainer.train_step = smoothed_loss, smoothed_loss, train_step
muse_args = args.muse_args[1:] if args.muse_args[:1] == ["--"] else args.muse_args
if main(muse_args) != 0:
    raise SystemExit("muse train failed")
trainer = state["trainer"]
cfg, final = trainer.cfg, trainer.final_eval
print(json.dumps({"model": cfg.model, "preset": cfg.preset, "seed": cfg.seed, "eps": args.eps, "prior": args.prior,
                  "steps": trainer.step,
                  "loss": final["loss"], "ppl": final["ppl"]}))
