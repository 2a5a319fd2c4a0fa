"""The Stage 1 benchmark: train Stage 1 and Phase 2 identically, measure, judge the criteria.

Steps, all in one process so that ratios are measured side by side:

1. Train Phase 2 and then Stage 1 with the same data, tokens, batch, sequence length,
   schedule and seed (``muse.train.Trainer``), each evaluated on the whole eval split.
2. The unigram perplexity of the training text on the eval split: a model that does not
   beat it is reported as not trained.
3. With one model at a time on the device: peak memory of forward + fp32 cross-entropy +
   backward (CUDA only), training and inference throughput.
4. Stage 1: non-finite rate and gradient norms over random-input trials; the planar check
   of every complex activation.
5. ``benchmarks.criteria`` turns the numbers into pass / fail / not_measured; the report
   (JSON + Markdown) carries every number with the device, date and command.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import criteria as crit
from benchmarks import measure
from muse._checks import check_int, check_type

MODELS = ("phase2", "stage1")


@dataclass
class Stage1BenchConfig:
    """Everything the runner needs; both models get the same training settings."""

    preset: str = "tiny"
    device: str = "auto"
    tokens: int | None = 131_072  # training tokens per model (the CPU quick-start default)
    max_steps: int | None = None  # replaces the token budget when set
    batch_size: int = 4
    seq_len: int | None = None  # None: the preset's max_seq_len
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    eval_every: int = 0
    train_split: str = "train"
    eval_split: str = "test"
    data_dir: str | None = None
    tokenizer_dir: str | None = None
    cache_dir: str | None = None
    tokens_npy: str | None = None
    eval_tokens_npy: str | None = None
    offline: bool = False
    final_eval_tokens: int | None = None  # None: the whole eval split
    memory_batch: int = 2  # the seed report measured B=2, S=1024
    memory_seq: int | None = None  # None: the preset's max_seq_len
    throughput_batch: int = 4
    throughput_steps: int = 10
    trials: int = 100
    trial_batch: int = 2
    trial_seq: int = 128
    seed: int = 1337
    out: str | None = None
    progress: bool = False
    model_overrides: dict = field(default_factory=dict)  # applied to both models (e.g. dropout)
    stage1_overrides: dict = field(default_factory=dict)  # Stage 1 only (e.g. mixer="recurrence")

    def __post_init__(self):
        check_type("preset", self.preset, str, "a preset name")
        for name in ("batch_size", "memory_batch", "throughput_batch", "throughput_steps", "trials",
                     "trial_batch", "trial_seq"):
            check_int(name, getattr(self, name), min_value=1)


def _train_config(cfg: Stage1BenchConfig, model: str, out: Path):
    from muse.train import TrainConfig

    return TrainConfig(
        model=model, preset=cfg.preset,
        model_overrides={**cfg.model_overrides, **(cfg.stage1_overrides if model == "stage1" else {})},
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup,
        tokens=None if cfg.max_steps is not None else cfg.tokens,
        max_steps=cfg.max_steps, eval_every=cfg.eval_every, final_eval_tokens=cfg.final_eval_tokens,
        train_split=cfg.train_split, eval_split=cfg.eval_split, data_dir=cfg.data_dir,
        tokenizer_dir=cfg.tokenizer_dir, cache_dir=cfg.cache_dir, tokens_npy=cfg.tokens_npy,
        eval_tokens_npy=cfg.eval_tokens_npy, offline=cfg.offline, out=str(out / model), seed=cfg.seed,
        device=cfg.device, progress=cfg.progress, ckpt_every=0,
    )


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_stage1_benchmark(cfg: Stage1BenchConfig, command: str = "") -> dict:
    """Run every step and return the report dict (also written to ``out/report.{json,md}``)."""
    from muse.train.data import load_run_data
    from muse.train.distributed import init_distributed
    from muse.train.runlog import environment
    from muse.train.trainer import Trainer

    check_type("cfg", cfg, Stage1BenchConfig, "a Stage1BenchConfig")
    stamp = datetime.datetime.now(datetime.timezone.utc)
    out = Path(cfg.out or f"runs/bench-stage1-{cfg.preset}-{stamp.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    ctx = init_distributed(cfg.device)
    if ctx.distributed:
        raise ValueError("the Stage 1 benchmark runs in one process; do not launch it with torchrun")
    dev = ctx.device
    data = load_run_data(_train_config(cfg, "stage1", out))

    runs, models = {}, {}
    for name in MODELS:
        trainer = Trainer(_train_config(cfg, name, out), ctx, data)
        results = trainer.run()
        runs[name] = {
            "eval_ppl": (results.get("final_eval") or {}).get("ppl"),
            "eval_loss": (results.get("final_eval") or {}).get("loss"),
            "eval_tokens_scored": (results.get("final_eval") or {}).get("tokens_scored"),
            "tokens_trained": results["tokens_seen"],
            "steps": results["steps"],
            "skipped_steps": results["skipped_steps"],
            "train_tokens_per_s": results["train_tokens_per_s"],
            "parameters": results["model"]["parameters"],
            "train_split": results["train_split"],
            "train_split_warning": results["train_split_warning"],
            "results_file": str(out / name / "results.json"),
        }
        models[name] = trainer.model.to("cpu")
        del trainer
        _free(dev)

    unigram = measure.unigram_perplexity(data.train, data.eval, models["stage1"].config.vocab_size)
    seq = cfg.seq_len or models["stage1"].config.max_seq_len
    mem_seq = cfg.memory_seq or models["stage1"].config.max_seq_len
    per_model = {}
    for name in MODELS:
        model = models[name].to(dev)
        per_model[name] = {
            "memory": measure.peak_memory(model, cfg.memory_batch, mem_seq, dev, cfg.seed),
            "train_throughput": measure.throughput(model, cfg.throughput_batch, seq, dev, cfg.throughput_steps,
                                                   train=True, seed=cfg.seed),
            "inference_throughput": measure.throughput(model, cfg.throughput_batch, seq, dev,
                                                       cfg.throughput_steps, train=False, seed=cfg.seed),
        }
        if name == "stage1":
            trial_seq = min(cfg.trial_seq, model.config.max_seq_len)
            per_model[name]["trials"] = measure.stability_trials(model, cfg.trials, cfg.trial_batch, trial_seq,
                                                                 dev, crit.GRAD_RANGE, cfg.seed)
            per_model[name]["layout"] = measure.planar_layout(model, cfg.trial_batch, trial_seq, dev, cfg.seed)
        models[name] = model.to("cpu")
        _free(dev)

    s1, p2 = per_model["stage1"], per_model["phase2"]
    mem_note = "" if dev.type == "cuda" else f"device is {dev}: peak memory is measured on CUDA only"
    criteria = [
        crit.trained("Phase 2", runs["phase2"], unigram),
        crit.trained("Stage 1", runs["stage1"], unigram),
        crit.perplexity(runs["stage1"]["eval_ppl"], runs["phase2"]["eval_ppl"]),
        crit.vram(*(None if m["memory"] is None else m["memory"]["peak_bytes"] for m in (s1, p2)), note=mem_note),
        crit.nan_rate(s1["trials"]),
        crit.gradient_norms(s1["trials"]),
        crit.planar(s1["layout"]),
    ]
    report = {
        "benchmark": "stage1-criteria",
        "date": stamp.isoformat(timespec="seconds"),
        "command": command,
        "environment": environment(dev),
        "config": dataclasses.asdict(cfg),
        "data": {"train_split": data.train_split, "eval_split": data.eval_split,
                 "train_tokens": int(len(data.train)), "eval_tokens": int(len(data.eval)),
                 "warnings": list(data.warnings)},
        "unigram_ppl": unigram,
        "runs": runs,
        "measurements": per_model,
        **crit.summarize(criteria),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (out / "report.md").write_text(format_markdown(report))
    return report


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _mib(m: dict | None) -> str:
    return "not measured" if m is None else f"{m['peak_bytes'] / 2**20:,.1f} MiB"


def format_markdown(report: dict) -> str:
    """The report as Markdown: provenance, criteria table, measurements."""
    env, runs, meas = report["environment"], report["runs"], report["measurements"]
    lines = [
        "# Stage 1 criteria report", "",
        f"- date (UTC): {report['date']}",
        f"- device: {env.get('device_name', env.get('device'))}; torch {env.get('torch_version')}",
        f"- git: {env.get('git', {}).get('commit', 'unknown')}",
        f"- command: `{report['command']}`",
        f"- training text: WikiText-2 `{report['data']['train_split']}` "
        f"({report['data']['train_tokens']:,} tokens); eval: `{report['data']['eval_split']}` "
        f"({report['data']['eval_tokens']:,} tokens)",
    ]
    lines += [f"- **{w}**" for w in report["data"]["warnings"]]
    lines += ["", f"**all_pass: {str(report['all_pass']).lower()}**"
              + (f" (not measured: {', '.join(report['not_measured'])})" if report["not_measured"] else ""), "",
              "| criterion | status | value | threshold |", "|---|---|---|---|"]
    for c in report["criteria"]:
        lines.append(f"| {c['name']} | {c['status']} | {c['value']} | {c['threshold']} |")
    lines += ["", "| | Phase 2 | Stage 1 |", "|---|---|---|"]
    rows = [
        ("parameters", lambda n: f"{runs[n]['parameters']:,}"),
        ("tokens trained", lambda n: f"{runs[n]['tokens_trained']:,}"),
        ("eval PPL", lambda n: _fmt(runs[n]["eval_ppl"], ".2f")),
        ("eval tokens scored", lambda n: _fmt(runs[n]["eval_tokens_scored"], ",")),
        ("skipped steps", lambda n: str(runs[n]["skipped_steps"])),
        ("peak memory fwd+bwd", lambda n: _mib(meas[n]["memory"])),
        ("train tok/s", lambda n: f"{meas[n]['train_throughput']['tokens_per_second']:,.0f}"),
        ("inference tok/s", lambda n: f"{meas[n]['inference_throughput']['tokens_per_second']:,.0f}"),
    ]
    for label, fn in rows:
        lines.append(f"| {label} | {fn('phase2')} | {fn('stage1')} |")
    lines += ["", f"Unigram PPL of the training text on the eval split: {report['unigram_ppl']:.2f}", ""]
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.stage1`` is ``muse bench stage1``."""
    from muse.cli import main as muse_main

    return muse_main(["bench", "stage1", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
