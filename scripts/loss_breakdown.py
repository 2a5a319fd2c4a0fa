"""Where two or more trained models differ: test loss per target, split into buckets.

Every model scores the same targets through the evaluation's windows (``muse.data.eval_windows``, as
``muse eval`` does); each target's loss is then put in buckets by

- whether the target token occurred among the previous ``--lookback`` tokens of the text (default: the
  window length), i.e. whether a copy from the context could have predicted it, and
- how often the target token occurs in the training text (``--train-tokens-npy``), when given.

Per bucket: its share of the targets, each model's mean loss and perplexity, and the share of the total
loss difference between the first model and each other one that falls in it. Example (docs/experiments.md
section 16):

    PYTHONPATH=. python scripts/loss_breakdown.py stage1=runs/a/last.safetensors phase2=runs/b/last.safetensors \\
        --eval-tokens-npy .devcarry/wikitext2-test.npy --train-tokens-npy .devcarry/wikitext2-valid.npy \\
        --max-tokens 32768 --stride 128 --out runs/breakdown.json
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from muse.data import batched, eval_windows
from muse.train.checkpoint import model_from_checkpoint
from muse.train.loss import IGNORE_INDEX, model_loss

FREQ_EDGES = (1, 10, 100, 1000)  # training-text counts: 0, 1-9, 10-99, 100-999, >= 1000


@torch.no_grad()
def per_target_loss(model, tokens: np.ndarray, seq_len: int, stride: int, device: torch.device,
                    batch_size: int = 8) -> np.ndarray:
    """Loss of every target tokens[1:] (index i: the target tokens[i + 1]), float64; NaN where not scored."""
    out = np.full(tokens.shape[0] - 1, np.nan)
    model.eval()
    first = 0  # index of the batch's first window; window k starts at token k * stride
    for inputs, targets, _ in batched(eval_windows(tokens, seq_len, stride), batch_size):
        each = model_loss(model, inputs.to(device), targets.to(device), reduction="none").double().cpu()
        for row in range(inputs.shape[0]):
            keep = targets[row] != IGNORE_INDEX
            out[(first + row) * stride + torch.nonzero(keep)[:, 0].numpy()] = each[row][keep].numpy()
        first += inputs.shape[0]
    return out


def in_context(tokens: np.ndarray, lookback: int) -> np.ndarray:
    """For each target tokens[i + 1]: does it occur in tokens[max(0, i + 1 - lookback) : i + 1]?"""
    last = {}
    seen = np.zeros(tokens.shape[0] - 1, dtype=bool)
    for i, tok in enumerate(tokens.tolist()):
        if i > 0:
            prev = last.get(tok)
            seen[i - 1] = prev is not None and i - prev <= lookback
        last[tok] = i
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="NAME=CHECKPOINT")
    p.add_argument("--eval-tokens-npy", required=True)
    p.add_argument("--train-tokens-npy")
    p.add_argument("--max-tokens", type=int, default=None, help="score only the first N targets")
    p.add_argument("--seq-len", type=int, default=None, help="default: the smallest max_seq_len of the models")
    p.add_argument("--stride", type=int, default=None, help="default: --seq-len (non-overlapping windows)")
    p.add_argument("--lookback", type=int, default=None, help="default: --seq-len")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    args = p.parse_args()
    device = torch.device(args.device)
    tokens = np.load(args.eval_tokens_npy).astype(np.int64)
    if args.max_tokens is not None:
        tokens = tokens[: args.max_tokens + 1]
    models = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"models must be NAME=CHECKPOINT, got {spec!r}")
        models[name], _ = model_from_checkpoint(path, device)
    seq_len = args.seq_len or min(m.config.max_seq_len for m in models.values())
    stride = args.stride or seq_len
    lookback = args.lookback or seq_len
    losses = {name: per_target_loss(m, tokens, seq_len, stride, device, args.batch_size)
              for name, m in models.items()}
    buckets = {"all": np.ones(tokens.shape[0] - 1, dtype=bool)}
    ctx = in_context(tokens, lookback)
    buckets[f"in the last {lookback} tokens"] = ctx
    buckets[f"not in the last {lookback} tokens"] = ~ctx
    if args.train_tokens_npy:
        counts = np.bincount(np.load(args.train_tokens_npy).astype(np.int64), minlength=int(tokens.max()) + 1)
        c = counts[tokens[1:]]
        edges = (0, *FREQ_EDGES, math.inf)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            label = "0" if hi == 1 else (f"{lo}-{hi - 1}" if hi != math.inf else f">= {lo}")
            buckets[f"train count {label}"] = (c >= lo) & (c < hi)
    names = list(losses)
    first = losses[names[0]]
    total_diff = {n: float(np.nansum(losses[n] - first)) for n in names[1:]}
    rows = []
    for label, mask in buckets.items():
        row = {"bucket": label, "targets": int(mask.sum()), "share": float(mask.mean())}
        for n in names:
            mean = float(np.nanmean(losses[n][mask])) if mask.any() else math.nan
            row[f"{n} loss"], row[f"{n} ppl"] = mean, math.exp(mean) if mean < 700 else math.inf
        for n in names[1:]:
            diff = float(np.nansum(losses[n][mask] - first[mask]))
            row[f"{n} - {names[0]} share of the difference"] = diff / total_diff[n] if total_diff[n] else math.nan
        rows.append(row)
    report = {"models": dict(pair.split("=", 1) for pair in args.models), "seq_len": seq_len, "stride": stride,
              "lookback": lookback, "targets": int(np.isfinite(first).sum()), "rows": rows}
    head = ["bucket", "targets"] + [f"{n} ppl" for n in names] + [f"{n}/{names[0]} ppl" for n in names[1:]] \
        + [f"share of {n} - {names[0]}" for n in names[1:]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["bucket"], f"{r['targets']:,}"] + [f"{r[f'{n} ppl']:,.2f}" for n in names]
        cells += [f"{r[f'{n} ppl'] / r[f'{names[0]} ppl']:.3f}" for n in names[1:]]
        cells += [f"{r[f'{n} - {names[0]} share of the difference']:.2f}" for n in names[1:]]
        print("| " + " | ".join(cells) + " |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
