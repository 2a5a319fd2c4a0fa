"""Gradient accumulation under CUDA graphs (CUDA only): does training with two micro-batches a step, its compiled
step replayed from CUDA graphs, train as torch's default compile mode does?

Each case is one ``muse.train.train`` call on synthetic data (tiny models, 6 steps, grad_accum 2); one JSON line
per case: the error's first line if it failed, else its train losses and the largest relative difference from the
same model in the default mode.  ``--fold alias`` puts back the optimizers' accumulation before 2026-12-07 (the fp16 gradients
stayed in ``.grad`` until the next backward began, after the next forward; an fp32 parameter's master gradient was
its ``.grad``; the full-precision optimizer let autograd take the first backward's gradient as ``.grad``), to show
whether that was what failed.  ``--ddp`` runs the same under DDP (two gloo ranks sharing GPU 0),
its compiled wrapper forced into reduce-overhead, which the trainer refuses today.

    python scripts/graph_accum_probe.py --out runs/probe [--ddp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import torch

from muse.train import optim, train
from muse.train.synthetic import synthetic_data, tiny_config

TINY = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.0)
MODELS = {
    "stage1-tiny": dict(model="stage1", preset="tiny", model_overrides=TINY),
    "stage1-mix-copy-tiny": dict(model="stage1", preset="mix-copy-tiny",
                                 model_overrides={**TINY, "d_ffn": 32, "pointer_dim": 8}),
    "phase2-tiny-bf16": dict(model="phase2", preset="tiny", amp="bf16",
                             model_overrides={"vocab_size": 64, "d_model": 32, "n_layers": 1, "max_seq_len": 32,
                                              "dropout": 0.0}),
}


def _old_fold(self) -> None:
    folded = False
    for p, m in zip(self.params, self.masters, strict=True):
        if p.grad is None:
            continue
        if m.grad is None:
            m.grad = p.grad.float()
        else:
            m.grad.add_(p.grad)
        p.grad = None
        folded = True
    self._folded += int(folded)


def _old_mixed_backward(self, loss) -> None:
    self._fold_grads()
    (loss.float() * self.scaler.scale).backward()


def _old_full_zero_grad(self, accumulate: bool = False) -> None:
    optim._AdamWBase.zero_grad(self)


_TREE = (optim.MixedPrecisionOptimizer._fold_grads, optim.MixedPrecisionOptimizer.backward,
         optim.FullPrecisionOptimizer.zero_grad)


def use_old_accumulation(old: bool = True) -> None:
    """The accumulation before 2026-12-07 (``old``), or the tree's."""
    fold, backward, zero_grad = (_old_fold, _old_mixed_backward, _old_full_zero_grad) if old else _TREE
    optim.MixedPrecisionOptimizer._fold_grads = fold
    optim.MixedPrecisionOptimizer.backward = backward
    optim.FullPrecisionOptimizer.zero_grad = zero_grad


def force_graphs_under_ddp() -> None:
    """The DDP wrapper compiles in reduce-overhead (the trainer compiles it in the default mode)."""
    from torch.nn.parallel import DistributedDataParallel

    import muse.train.trainer as trainer

    compile_model = trainer.compile_model

    def patched(model, *, backend="inductor", fullgraph=False, mode=None):
        return compile_model(model, backend=backend, fullgraph=fullgraph,
                             mode="reduce-overhead" if isinstance(model, DistributedDataParallel) else mode)

    trainer.compile_model = patched


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


def run_case(out: Path, model: str, mode: str, compile_: bool = True) -> dict:
    kw = dict(MODELS[model], max_steps=6, grad_accum=2, batch_size=2, seq_len=32, final_eval_tokens=256,
              device="cuda", compile=compile_)
    if compile_:
        kw["compile_mode"] = mode
    torch._dynamo.reset()
    try:
        res = train(tiny_config(str(out), **kw), synthetic_data())
        return {"ok": True, "compile_mode": res["compile_mode"], "losses": losses(out),
                "final_eval": (res.get("final_eval") or {}).get("loss")}
    except Exception as e:  # the probe reports the failure instead of stopping
        lines = [ln for ln in traceback.format_exception_only(e)[-1].splitlines() if ln.strip()]
        return {"ok": False, "error": f"{type(e).__name__}: {lines[0][:400] if lines else ''}"}


def rel(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def single(out: Path, folds: list[str]) -> None:
    for model in MODELS:
        base = run_case(out / f"{model}-default", model, "default")
        print(json.dumps({"model": model, "mode": "default", "fold": "copy", **base}), flush=True)
        for fold in folds:
            use_old_accumulation(fold == "alias")
            res = run_case(out / f"{model}-graphs-{fold}", model, "reduce-overhead")
            use_old_accumulation(False)
            if res["ok"] and base["ok"]:
                res["max_rel_diff_vs_default"] = rel(res["losses"], base["losses"])
            print(json.dumps({"model": model, "mode": "reduce-overhead", "fold": fold, **res}), flush=True)


def ddp(out: Path, folds: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for fold in folds:
        for graphs in (False, True):
            name = f"ddp-{'graphs' if graphs else 'default'}-{fold}"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
                   "--rank-run", str(out / name), "--fold", fold] + (["--graphs"] if graphs else [])
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
            row = {"ddp": True, "graphs": graphs, "fold": fold, "rc": proc.returncode}
            if proc.returncode == 0:
                row["losses"] = losses(out / name)
            else:
                err = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "Error" in ln or "overwritten" in ln]
                row["error"] = [ln[:300] for ln in err[:6]]
            print(json.dumps(row), flush=True)


def rank_run(out: Path, fold: str, graphs: bool) -> None:
    if fold == "alias":
        use_old_accumulation()
    if graphs:
        force_graphs_under_ddp()
    kw = dict(MODELS["stage1-mix-copy-tiny"], max_steps=6, grad_accum=2, batch_size=2, seq_len=32,
              final_eval_tokens=256, device="cuda", dist_backend="gloo", compile=True, compile_backend="inductor")
    train(tiny_config(str(out), **kw), synthetic_data())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/graph-accum-probe"))
    ap.add_argument("--folds", default="copy,alias", help="comma-separated: copy (the tree's), alias (before)")
    ap.add_argument("--ddp", action="store_true", help="the DDP cases instead of the single-process ones")
    ap.add_argument("--rank-run", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--fold", default="copy", help=argparse.SUPPRESS)
    ap.add_argument("--graphs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("this probe needs CUDA (CUDA graphs)")
    if args.rank_run is not None:
        rank_run(args.rank_run, args.fold, args.graphs)
        return
    folds = args.folds.split(",")
    (ddp if args.ddp else single)(args.out, folds)


if __name__ == "__main__":
    main()
