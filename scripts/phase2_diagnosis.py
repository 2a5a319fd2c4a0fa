"""Diagnosis of Phase 2's mixers (issue 10 item 1): statistics at init and short CPU training runs.

Proposed fixes are tried by monkeypatching, not by editing ``muse/models/phase2.py``:

* ``headnorm``: the Hebbian read-out y (B, H, S, d_head) divided by its per-head RMS
  (RMSNorm without gain, as RetNet's GroupNorm) before the output projection;
* ``bkwide``: BK-Core with ``bk_channels`` C, ``bk_z = 2 + i eps`` (Re z at the centre of
  the Laplacian's band [0, 4], so a_i - Re z = v_i starts at 0) and per-channel
  dissipation Gamma_c = softplus(b_c) spread geometrically, so channels start with memory
  lengths from ~2 to ~1/(Gamma_min + eps) tokens.

    python scripts/phase2_diagnosis.py init --preset seed     # RMS by position, BK memory
    python scripts/phase2_diagnosis.py train --variants none,default,headnorm,bkwide,both

Variants are named in :func:`variant_overrides`; the config fields (``hebbian_norm``,
``bk_channels``, ``bk_norm``, ``ORIGINAL``) are the implemented forms of these fixes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from muse.models import build_model
from muse.models.phase2 import ORIGINAL
from muse.nn import mixers as p2
from muse.scan.bk import bk_diagonal, bk_green_sequential

POSITIONS = (0, 63, 255, 511, 1023)


def rms(t: torch.Tensor, dims) -> torch.Tensor:
    return t.float().pow(2).mean(dim=dims).sqrt()


@contextlib.contextmanager
def headnorm(enabled: bool):
    """Patch the Hebbian scan so its read-out is RMS-normalised per head (eps 1e-6)."""
    original = p2.hebbian_parallel
    if enabled:
        def normalised(q, k, v, log_decay, eta=1.0, chunk_size=None):
            y = original(q, k, v, log_decay, eta, chunk_size)  # (B, H, S, dh)
            return y * torch.rsqrt(y.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        p2.hebbian_parallel = normalised
    try:
        yield
    finally:
        p2.hebbian_parallel = original


def spread_bk_gamma(model, gamma_max: float, gamma_min: float) -> None:
    """Per-channel dissipation biases: Gamma_c geometric from gamma_max down to gamma_min."""
    for module in model.modules():
        if isinstance(module, p2.BKCore):
            c = module.gamma.bias.numel()
            g = torch.logspace(math.log10(gamma_max), math.log10(gamma_min), c, dtype=torch.float64)
            with torch.no_grad():
                module.gamma.bias.copy_(torch.log(torch.expm1(g)).float())


OLD_DEFAULT = dict(bk_channels=1, bk_norm=False, hebbian_norm=False)  # the defaults before issue 10 item 1


def variant_overrides(name: str, channels: int, eps: float) -> tuple[dict, bool, bool]:
    """(config overrides, headnorm patch on, spread gamma) of a variant.

    ``default`` is today's default config; ``old-default`` the one the diagnosis measured;
    ``headnorm``, ``bkwide``, ``both`` patch the old default as in the diagnosis.
    """
    bk = dict(OLD_DEFAULT, bk_channels=channels, bk_z=complex(2.0, eps))
    return {
        "none": (dict(mixers=()), False, False),
        "default": ({}, False, False),
        "old-default": (OLD_DEFAULT, False, False),
        "headnorm": (OLD_DEFAULT, True, False),
        "bkwide": (bk, False, True),
        "both": (bk, True, True),
        "hebbian": (dict(OLD_DEFAULT, mixers=("hebbian",)), False, False),
        "hebbian+headnorm": (dict(OLD_DEFAULT, mixers=("hebbian",)), True, False),
        "bk": (dict(OLD_DEFAULT, mixers=("bk",)), False, False),
        "bkwide-only": ({**bk, "mixers": ("bk",)}, False, True),
        "bk16-z1j+headnorm": (dict(OLD_DEFAULT, bk_channels=channels), True, False),
        "hebnorm": (dict(OLD_DEFAULT, hebbian_norm=True), False, False),
        "hebnorm+bk16": (dict(bk_norm=False), False, False),
        "default+bknorm": (dict(bk_norm=True), False, False),
        "default-noqscale": (dict(hebbian_q_scale=False), False, False),
        "original": (dict(ORIGINAL), False, False),
        "gpt": ({}, False, False),
    }[name]


def bk_memory(a: torch.Tensor, z: complex, s: int, horizon: int) -> list[float]:
    """|dG_t / da_s| for t = s .. s + horizon, by a finite difference on the sequential reference."""
    a = a.to(torch.complex128)
    h = 1e-6
    bumped = a.clone()
    bumped[..., s] += h
    d = (bk_green_sequential(bumped, z) - bk_green_sequential(a, z)).abs() / h  # (..., S)
    return [float(d[..., s + k].mean()) for k in range(horizon + 1)]


def cmd_init(args) -> dict:
    torch.manual_seed(0)
    out = {}
    for name in args.variants.split(","):
        overrides, hn, spread = variant_overrides(name, args.channels, args.eps)
        model = build_model("phase2", args.preset, dropout=0.0, **overrides).eval()
        if spread:
            spread_bk_gamma(model, args.gamma_max, args.gamma_min)
        seq = model.config.max_seq_len
        ids = torch.randint(0, model.config.vocab_size, (args.batch, seq), generator=torch.Generator().manual_seed(1))
        rec: dict[str, list] = {}
        hooks = []
        block = model.blocks[0]

        def keep(key, store=rec):
            def hook(mod, inp, outp):
                store.setdefault(key, []).append(outp.detach())
            return hook

        def keep_input(key, store=rec):
            def hook(mod, inp):
                store.setdefault(key, []).append(inp[0].detach())
            return hook

        for mname, mixer in zip(block.mixer_names, block.mixers, strict=True):
            hooks.append(mixer.register_forward_hook(keep(f"{mname}_branch")))
            hooks.append(mixer.out.register_forward_pre_hook(keep_input(f"{mname}_readout")))
            if mname == "bk" and mixer.gamma is not None and (mixer.shift, mixer.coupling) == (2.0, 1.0):
                hooks.append(mixer.potential.register_forward_hook(keep("bk_potential")))
                hooks.append(mixer.gamma.register_forward_hook(keep("bk_gamma")))
        hooks.append(block.ffn.register_forward_hook(keep("ffn_branch")))
        with torch.no_grad(), headnorm(hn):
            model(ids)
        for h in hooks:
            h.remove()
        stats = {}
        for key, (t,) in rec.items():
            if key.startswith("bk_p") or key.startswith("bk_g"):
                continue
            by_pos = rms(t, (0, 2))  # (S,)
            stats[key] = {p: round(float(by_pos[p]), 5) for p in POSITIONS if p < seq}
        if "bk_potential" in rec:
            v = rec["bk_potential"][0].transpose(1, 2)  # (B, C, S)
            gamma = F.softplus(rec["bk_gamma"][0]).transpose(1, 2)
            a = bk_diagonal(v.double(), gamma.double())[:1, :, :256]
            mem = bk_memory(a, model.config.bk_z, 100, 64)
            per_channel = []
            for c in range(a.shape[1]):
                m = bk_memory(a[:, c : c + 1], model.config.bk_z, 100, 128)
                per_channel.append(next((k for k, x in enumerate(m) if x < 0.01 * m[0]), 129))
            stats["bk_influence_vs_lag"] = {k: f"{mem[k]:.2e}" for k in (0, 1, 2, 4, 8, 16, 32, 64)}
            stats["bk_memory_tokens_per_channel(1%)"] = per_channel
            stats["bk_gamma_mean"] = round(float(gamma.mean()), 4)
        out[name] = stats
        print(name, json.dumps(stats), flush=True)
    return out


def remap_vocab(train: np.ndarray, evals: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids -> rank of frequency in ``train`` (top size-1 kept, the rest one UNK id)."""
    counts = np.bincount(train, minlength=max(int(train.max()), int(evals.max())) + 1)
    order = np.argsort(-counts, kind="stable")
    table = np.full(counts.shape[0], size - 1, dtype=np.int64)
    table[order[: size - 1]] = np.arange(size - 1)
    return table[train], table[evals]


def cmd_train(args) -> dict:
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    train_np = np.load(next(cache.glob("valid-*.npy"))).astype(np.int64)
    eval_np = np.load(next(cache.glob("test-*.npy"))).astype(np.int64)
    train_np, eval_np = remap_vocab(train_np, eval_np, args.vocab)
    s, b = args.seq, args.batch
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(train_np) - s - 1, (args.steps, b))
    eval_starts = np.linspace(0, len(eval_np) - s - 2, args.eval_windows).astype(np.int64)
    results = {}
    for name in args.variants.split(","):
        overrides, hn, spread = variant_overrides(name, args.channels, args.eps)
        torch.manual_seed(1337)
        model = build_model("gpt" if name == "gpt" else "phase2", "tiny", vocab_size=args.vocab, d_model=args.d_model,
                            n_layers=args.n_layers, n_heads=args.n_heads, max_seq_len=s, dropout=0.0,
                            **overrides)
        if spread:
            spread_bk_gamma(model, args.gamma_max, args.gamma_min)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
        t0 = time.perf_counter()
        with headnorm(hn):
            for step in range(args.steps):
                lr = args.lr * min(1.0, (step + 1) / args.warmup)
                lr = lr if step < args.warmup else 0.1 * args.lr + 0.9 * args.lr * 0.5 * (
                    1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))
                for g in opt.param_groups:
                    g["lr"] = lr
                x = torch.from_numpy(np.stack([train_np[i : i + s + 1] for i in starts[step]]))
                loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, args.vocab), x[:, 1:].reshape(-1))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            model.eval()
            total, n = 0.0, 0
            with torch.no_grad():
                for i in range(0, len(eval_starts), 8):
                    x = torch.from_numpy(np.stack([eval_np[j : j + s + 1] for j in eval_starts[i : i + 8]]))
                    logits = model(x[:, :-1])
                    total += F.cross_entropy(logits.reshape(-1, args.vocab), x[:, 1:].reshape(-1),
                                             reduction="sum").item()
                    n += x[:, 1:].numel()
        results[name] = {"eval_loss": round(total / n, 4), "last_train_loss": round(loss.item(), 4),
                         "params": model.num_parameters(), "seconds": round(time.perf_counter() - t0, 1)}
        print(name, results[name], flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["init", "train"])
    p.add_argument("--variants", default="default,headnorm,bkwide")
    p.add_argument("--preset", default="seed")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--eps", type=float, default=0.05, help="Im z of the wide BK-Core")
    p.add_argument("--gamma-max", type=float, default=0.5)
    p.add_argument("--gamma-min", type=float, default=0.01)
    p.add_argument("--cache", default="/tmp/gpt-cache/tokens/wikitext-2-raw-v1")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--n-heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    res = cmd_init(args) if args.cmd == "init" else cmd_train(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
