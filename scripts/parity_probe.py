"""Running parity with a stack of diagonal recurrences: a real decay against a per-token rotation.

A diagonal linear recurrence whose decays are positive reals cannot keep the parity of a bit stream at lengths it
was not trained on (Grazzi et al. 2024, "Unlocking state-tracking in linear RNNs through negative eigenvalues");
a complex decay whose phase depends on the token can (h turns by pi on every 1).  This probe trains the same small
model, token table -> [ComplexLayerNorm -> ComplexRecurrence(decay="input") + residual] x L -> ComplexLayerNorm ->
a real linear map of [Re, Im] to 2 logits, once with ``lambda_kind="real"`` and once with ``"complex"`` (the
rotation by c r_t omega per token), and with ``separate`` (a probe-only variant, not in the library: a real lambda
whose state turns by pi tanh(P Re(A x_t) + b) a token, P a real d_state x d_state map, so the turn no longer decays the
state by the same rate), on random bit strings of 1..``--train-len`` tokens after a start token, the
target at each position being the parity of the bits so far; then reports the accuracy at longer lengths.

    python scripts/parity_probe.py --steps 1500 --out runs/parity.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch
import torch.nn.functional as F
from torch import nn

import muse.complex as C
from muse.nn import ComplexLayerNorm, ComplexRecurrence

START, ZERO, ONE = 2, 0, 1


class SeparatePhaseRecurrence(ComplexRecurrence):
    """A real-lambda ``decay="input"`` recurrence whose state also turns by theta_t = pi tanh(P rate_t + b): the
    phase has its own map from the same pre-sigmoid rate, so a turn of pi costs no decay."""

    def __init__(self, d: int, **kwargs):
        super().__init__(d, lambda_kind="real", **kwargs)
        self.phase_up = nn.Linear(self.d_state, self.d_state, dtype=self.nu.dtype)
        nn.init.zeros_(self.phase_up.bias)

    def log_decay(self, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rate = rate.to(self.nu.dtype)
        power = self.decay_scale * torch.sigmoid(rate)
        return -power * torch.exp(self.nu), math.pi * torch.tanh(self.phase_up(rate))


def _mixer(d: int, lambda_kind: str) -> ComplexRecurrence:
    kwargs = dict(r_min=0.9, r_max=0.999, dtype=torch.float32, decay="input", gate=True)
    if lambda_kind == "separate":
        return SeparatePhaseRecurrence(d, **kwargs)
    return ComplexRecurrence(d, lambda_kind=lambda_kind, **kwargs)


class ParityNet(nn.Module):
    """Token table, ``layers`` pre-norm residual recurrences, a real read-out of both planes."""

    def __init__(self, d: int, layers: int, lambda_kind: str):
        super().__init__()
        self.table = nn.Parameter(torch.randn(2, 3, d) / d**0.5)
        self.norms = nn.ModuleList(ComplexLayerNorm(d, dtype=torch.float32) for _ in range(layers))
        self.mixers = nn.ModuleList(_mixer(d, lambda_kind) for _ in range(layers))
        self.final = ComplexLayerNorm(d, dtype=torch.float32)
        self.head = nn.Linear(2 * d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = C.ComplexTensor(self.table[:, ids])
        for norm, mixer in zip(self.norms, self.mixers, strict=True):
            x = C.add(x, mixer(norm(x)))
        p = self.final(x).planes
        return self.head(torch.cat([p[0], p[1]], dim=-1))


def batch(n: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (n, length + 1) starting with START, running parity targets (n, length + 1); the start's is 0)."""
    bits = torch.randint(0, 2, (n, length), generator=gen)
    ids = torch.cat([torch.full((n, 1), START), bits], dim=1)
    parity = torch.cat([torch.zeros(n, 1, dtype=torch.long), bits.cumsum(1) % 2], dim=1)
    return ids, parity


def train(lambda_kind: str, args) -> dict:
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = ParityNet(args.d_model, args.layers, lambda_kind)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    start = time.perf_counter()
    for _ in range(args.steps):
        length = int(torch.randint(1, args.train_len + 1, (1,), generator=gen))
        ids, target = batch(args.batch_size, length, gen)
        loss = F.cross_entropy(model(ids).flatten(0, 1), target.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    test = {}
    with torch.no_grad():
        for length in args.test_len:
            ids, target = batch(args.eval_batch, length, torch.Generator().manual_seed(10_000 + length))
            pred = model(ids).argmax(-1)
            test[str(length)] = {"last_token_accuracy": float((pred[:, -1] == target[:, -1]).float().mean()),
                                 "all_positions_accuracy": float((pred[:, 1:] == target[:, 1:]).float().mean())}
    return {"lambda_kind": lambda_kind, "final_train_loss": float(loss.detach()), "train_seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()), "test": test}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=16)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--train-len", type=int, default=32)
    ap.add_argument("--test-len", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--eval-batch", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--kinds", nargs="+", default=["real", "complex"], choices=["real", "complex", "separate"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs = []
    for seed in args.seeds:
        for kind in args.kinds:
            args.seed = seed
            run = {"seed": seed, **train(kind, args)}
            runs.append(run)
            accs = ", ".join(f"S={k}: {v['last_token_accuracy']:.3f}" for k, v in run["test"].items())
            print(f"seed {seed} lambda {kind:7s} loss {run['final_train_loss']:.4f} last-token accuracy {accs} "
                  f"({run['train_seconds']} s)", flush=True)
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in vars(args).items() if k not in ("seed", "out"))
    report = {"command": f"python scripts/parity_probe.py {flags}",
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "runs": runs}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
