"""The Stage 1 benchmark: train Stage 1 and Phase 2 identically, measure, judge the criteria.

Steps, all in one process so that ratios are measured side by side:

1. Train Phase 2, Stage 1 and the reference runs (Phase 2 without mixers, the GPT) with the
   same data, tokens, batch, sequence length, schedule and seed (``muse.train.Trainer``), each
   evaluated on the whole eval split with the same sliding-window stride and every N steps on
   a fixed subset (the eval curve). A run that raises is reported as failed, not a crash.
2. The unigram perplexity of the training text on the eval split: a model that does not
   beat it is reported as not trained.
3. With one model at a time on the device: peak memory of forward + LM loss + backward
   with the fused loss (``muse.train.loss``, the criterion) and with full logits
   (informational), measured as live tensor bytes everywhere and also by
   ``torch.cuda.max_memory_allocated`` on CUDA; training throughput with both losses and
   inference throughput.
4. Stage 1: non-finite rate and gradient norms over random-input trials; the planar check
   of every complex activation.
5. ``benchmarks.criteria`` turns the numbers into pass / fail / not_measured; the report
   (JSON + Markdown) carries every number with the device, date and command.

``run_stage1_benchmark`` is the library entry point; ``muse bench stage1`` (``muse/cli/bench.py``)
is its command-line wrapper.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks import criteria as crit
from benchmarks import measure
from muse._checks import check_choice, check_float, check_int, check_type
from muse._io import atomic_write_text, check_output_dir, write_report_json
from muse.models.compile import (
    GRAPH_MODES,
    check_memory_budget,
    check_mode,
    resolve_compile,
    set_memory_budget,
)
from muse.train.config import OPTIMIZERS
from muse.train.loss import loss_path
from muse.train.runlog import environment

MODELS = ("phase2", "stage1")
#: run name -> (registry model, config overrides). ``phase2_nomix`` is Phase 2's own per-token
#: variant: the PPL criterion counts only if Phase 2 beats it; ``gpt`` is informational.
REFERENCES: dict[str, tuple[str, dict]] = {
    "phase2_nomix": ("phase2", {"mixers": ()}),
    "gpt": ("gpt", {}),
}
#: the shape at which the seed report measured memory
SEED_MEMORY_SHAPE = (2, 1024)


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
    # AdamW weight decay on linear weights, every run.  The GPU budget (1,572,864 tokens, ~6 passes over the
    # offline training text) is run at 3.0: Phase 2 scores as at 0.1 there, the mix Stage 1 5 % better; a short
    # run such as the CPU quick start is not over-fitting, and 3.0 costs Phase 2 8 % (docs/experiments.md §9)
    weight_decay: float = 0.1
    # every run's optimizer: "muon" puts the hidden linear weights under Muon (muse.train.muon), the rest under AdamW
    optimizer: str = "adamw"
    muon_rms: float = 0.2  # with optimizer "muon": the step's RMS per weight at unit lr
    # the training loss's label smoothing, every run (evaluation scores the plain cross-entropy): at the GPU budget
    # 0.1 lowers the mix Stage 1's test PPL by 15 % and Phase 2's by 13 % (docs/experiments.md §23)
    label_smoothing: float = 0.0
    eval_every: int | None = None  # periodic eval (the eval curve) every N steps; None: 8 per run; 0: off
    eval_curve_tokens: int = 16_384  # targets scored by each periodic eval
    eval_stride: int | None = None  # final-eval window stride, the same for every run; None: half a window
    stage1_preset: str | None = None  # Stage 1's preset when it differs (e.g. "mix"); None: ``preset``
    references: tuple[str, ...] = ("phase2_nomix", "gpt")  # runs trained the same way (see REFERENCES)
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
    loss_impl: str = "fused"  # memory/throughput loss: each model's tracker-visible fused path (measure.resolve_impl)
    seed: int = 1337
    out: str | None = None
    progress: bool = False
    compile: bool | None = None  # training under torch.compile; None: on for CUDA, off for CPU
    keep_logits: bool = False  # the training runs' loss keeps its chunks' logits (speed; not the memory row's loss)
    compile_memory_budget: float | None = None  # compiled runs: the partitioner's activation memory budget
    compile_mode: str | None = None  # compiled runs (muse.models.compile.MODES); None: resolve_compile_mode's default
    model_overrides: dict = field(default_factory=dict)  # applied to both models (e.g. dropout)
    stage1_overrides: dict = field(default_factory=dict)  # Stage 1 only (e.g. mixer="recurrence")
    phase2_overrides: dict = field(default_factory=dict)  # Phase 2 and its mixer-free reference (e.g. zeta_scale)

    def __post_init__(self):
        check_type("preset", self.preset, str, "a preset name")
        check_float("weight_decay", self.weight_decay, min_value=0.0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_float("muon_rms", self.muon_rms, min_value=0.0, min_inclusive=False)
        check_float("label_smoothing", self.label_smoothing, min_value=0.0, max_value=1.0, max_inclusive=False)
        check_type("keep_logits", self.keep_logits, bool, "a bool")
        if self.compile_memory_budget is not None:
            check_memory_budget(self.compile_memory_budget, "compile_memory_budget")
            if self.compile is False:
                raise ValueError(f"compile_memory_budget={self.compile_memory_budget} needs compiled training; "
                                 "compile is False (--no-compile)")
        check_mode(self.compile_mode, "compile_mode")
        if self.compile_mode is not None and self.compile is False:
            raise ValueError(f"compile_mode={self.compile_mode!r} needs compiled training; compile is False "
                             "(--no-compile)")
        for name in ("model_overrides", "stage1_overrides", "phase2_overrides"):
            check_type(name, getattr(self, name), dict, "a dict of config fields")
        for name in ("batch_size", "memory_batch", "throughput_batch", "throughput_steps", "trials",
                     "trial_batch", "trial_seq"):
            check_int(name, getattr(self, name), min_value=1)
        loss_path(torch.float32, measure.resolve_impl(torch.float32, self.loss_impl))  # unknown/unavailable
        if isinstance(self.references, str) or not isinstance(self.references, (list, tuple)):
            raise TypeError(f"references must be a list of run names, got {type(self.references).__name__}")
        self.references = tuple(self.references)
        unknown = sorted(set(self.references) - set(REFERENCES))
        if unknown:
            raise ValueError(f"references: unknown run(s) {unknown}; choose from {sorted(REFERENCES)}")
        if self.eval_every is not None:
            check_int("eval_every", self.eval_every, min_value=0)
        check_int("eval_curve_tokens", self.eval_curve_tokens, min_value=1)
        if self.eval_stride is not None:
            check_int("eval_stride", self.eval_stride, min_value=1)
        if self.stage1_preset is not None:
            check_type("stage1_preset", self.stage1_preset, str, "a Stage 1 preset name or None")

    def run_names(self) -> tuple[str, ...]:
        """Every run, in training order: the two judged models, then the references."""
        return (*MODELS, *self.references)


def _run_spec(cfg: Stage1BenchConfig, run: str) -> tuple[str, str, dict]:
    """(registry model, preset, config overrides) of benchmark run ``run``."""
    model, extra = REFERENCES.get(run, (run, {}))
    preset = cfg.stage1_preset if run == "stage1" and cfg.stage1_preset else cfg.preset
    own = cfg.stage1_overrides if run == "stage1" else cfg.phase2_overrides if model == "phase2" else {}
    return model, preset, {**cfg.model_overrides, **own, **extra}


def _train_config(cfg: Stage1BenchConfig, run: str, out: Path):
    from muse.models.registry import make_config
    from muse.train import TrainConfig
    from muse.train.trainer import check_label_smoothing

    model, preset, overrides = _run_spec(cfg, run)
    model_config = make_config(model, preset, **overrides)
    seq = cfg.seq_len or model_config.max_seq_len
    steps = cfg.max_steps or max(1, (cfg.tokens or 0) // (cfg.batch_size * seq))
    eval_every = max(1, steps // 8) if cfg.eval_every is None else cfg.eval_every
    train_cfg = TrainConfig(
        model=model, preset=preset, model_overrides=overrides, seq_len=cfg.seq_len,
        batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
        label_smoothing=cfg.label_smoothing, optimizer=cfg.optimizer, muon_rms=cfg.muon_rms,
        tokens=None if cfg.max_steps is not None else cfg.tokens,
        max_steps=cfg.max_steps, eval_every=eval_every, eval_tokens=cfg.eval_curve_tokens,
        final_eval_tokens=cfg.final_eval_tokens, eval_stride=cfg.eval_stride or max(1, seq // 2),
        train_split=cfg.train_split, eval_split=cfg.eval_split, data_dir=cfg.data_dir,
        tokenizer_dir=cfg.tokenizer_dir, cache_dir=cfg.cache_dir, tokens_npy=cfg.tokens_npy,
        eval_tokens_npy=cfg.eval_tokens_npy, offline=cfg.offline, out=str(out / run), seed=cfg.seed,
        device=cfg.device, progress=cfg.progress, ckpt_every=0, compile=cfg.compile, keep_logits=cfg.keep_logits,
        compile_memory_budget=cfg.compile_memory_budget, compile_mode=cfg.compile_mode,
    )
    check_label_smoothing(train_cfg, model_config)
    return train_cfg


def _eval_curve(log: Path) -> list[dict]:
    """(step, tokens, loss) of every periodic eval in a run's log.jsonl."""
    import json

    curve = []
    if log.exists():
        for line in log.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("type") == "eval" and not rec.get("final"):
                curve.append({k: rec.get(k) for k in ("step", "tokens", "loss", "ppl")})
    return curve


def _train_run(cfg: Stage1BenchConfig, run: str, out: Path, ctx, data):
    """Train and evaluate one run: (its record, the trained model on the CPU or None).

    An exception is caught and recorded, so one broken model still yields a report."""
    from muse.train.trainer import Trainer

    try:
        trainer = Trainer(_train_config(cfg, run, out), ctx, data)
        results = trainer.run()
    except Exception as exc:  # noqa: BLE001 -- reported as this run's failure
        return {"error": f"{type(exc).__name__}: {exc}"}, None
    final = results.get("final_eval") or {}
    record = {
        "model": results["model"]["name"], "preset": results["model"]["preset"],
        "overrides": _run_spec(cfg, run)[2],
        "eval_ppl": final.get("ppl"), "eval_loss": final.get("loss"),
        "eval_tokens_scored": final.get("tokens_scored"),
        "eval_bits_per_byte": final.get("bits_per_byte"), "eval_word_ppl": final.get("word_ppl"),
        "eval_stride": results["train_config"]["eval_stride"],
        "eval_curve": _eval_curve(out / run / "log.jsonl"),
        "tokens_trained": results["tokens_seen"],
        "steps": results["steps"],
        "skipped_steps": results["skipped_steps"],
        "train_tokens_per_s": results["train_tokens_per_s"],
        "steady_tokens_per_s": results.get("steady_tokens_per_s"),
        "compiled": results["compiled"], "compile_s": results["compile_s"],
        "compile_recompute": results.get("compile_recompute"), "compile_mode": results.get("compile_mode"),
        "parameters": results["model"]["parameters"],
        "train_split": results["train_split"],
        "train_split_warning": results["train_split_warning"],
        "results_file": str(out / run / "results.json"),
    }
    model = trainer.model.to("cpu")
    del trainer
    return record, model


def _compiled_memory(model, batch: int, seq: int, device: torch.device, seed: int,
                     budget: float | None = None) -> dict:
    """:func:`measure.compiled_peak_memory` under the training runs' activation memory budget, or its error: an
    informational row never stops the report."""
    previous = set_memory_budget(budget)
    try:
        return measure.compiled_peak_memory(model, batch, seq, device, seed)
    except Exception as exc:  # noqa: BLE001 -- reported in the row
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        set_memory_budget(previous)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def run_stage1_benchmark(cfg: Stage1BenchConfig, command: str = "") -> dict:
    """Run every step and return the report dict (also written to ``out/report.{json,md}``)."""
    from muse.train.data import load_run_data
    from muse.train.distributed import init_distributed

    check_type("cfg", cfg, Stage1BenchConfig, "a Stage1BenchConfig")
    names = cfg.run_names()
    stamp = datetime.datetime.now(datetime.timezone.utc)
    out = check_output_dir("out (--out)", cfg.out or f"runs/bench-stage1-{cfg.preset}-{stamp.strftime('%Y%m%d-%H%M%S')}")
    for name in names:  # every setting is validated before anything is created or trained
        _train_config(cfg, name, out)
    ctx = init_distributed(cfg.device)
    if ctx.distributed:
        raise ValueError("the Stage 1 benchmark runs in one process; do not launch it with torchrun")
    dev = ctx.device
    if cfg.compile_memory_budget is not None and not resolve_compile(cfg.compile, dev):
        raise ValueError(f"compile_memory_budget={cfg.compile_memory_budget} needs compiled training; compile is off "
                         f"here (pass --compile; it is off by default on {dev.type})")
    if cfg.compile_mode is not None and not resolve_compile(cfg.compile, dev):
        raise ValueError(f"compile_mode={cfg.compile_mode!r} needs compiled training; compile is off here (pass "
                         f"--compile; it is off by default on {dev.type})")
    if cfg.compile_mode in GRAPH_MODES and dev.type != "cuda":
        raise ValueError(f"compile_mode={cfg.compile_mode!r} replays CUDA graphs: it needs a CUDA device, got {dev.type}")
    data = load_run_data(_train_config(cfg, "stage1", out))
    scored = data.eval if cfg.final_eval_tokens is None else data.eval[: cfg.final_eval_tokens + 1]
    unigram = measure.unigram_perplexity(data.train, scored, _train_vocab(cfg))  # on the tokens the models are scored on
    data_summary = {"train_split": data.train_split, "eval_split": data.eval_split,
                    "train_tokens": int(len(data.train)), "eval_tokens": int(len(data.eval)),
                    "warnings": list(data.warnings)}
    data_summary["eval_targets"] = _eval_targets(len(data.eval), cfg.final_eval_tokens)
    runs, models, per_model = {}, {}, {}

    def save(pending: str | None) -> dict:
        """Write the report as it stands before each step, so a run stopped by a time limit or a crash leaves every
        figure it measured, and what it had not reached judged not measured."""
        report = build_report(cfg, stamp, command, environment(dev), data_summary, unigram, runs, per_model,
                              dev.type, pending=pending)
        return write_report(report, out)

    for name in names:
        save(f"training {name}")
        runs[name], models[name] = _train_run(cfg, name, out, ctx, data)
        _free(dev)

    for name in names:
        if models[name] is None:
            per_model[name] = None
            continue
        save(f"measuring {name}")
        model = models[name].to(dev)
        seq = cfg.seq_len or model.config.max_seq_len
        mem_seq = cfg.memory_seq or model.config.max_seq_len
        per_model[name] = {
            "memory": measure.peak_memory(model, cfg.memory_batch, mem_seq, dev, cfg.seed, "fused",
                                          cfg.loss_impl),
            "memory_full_logits": measure.peak_memory(model, cfg.memory_batch, mem_seq, dev, cfg.seed, "full"),
            "train_throughput": measure.throughput(model, cfg.throughput_batch, seq, dev, cfg.throughput_steps,
                                                   train=True, seed=cfg.seed, loss="fused",
                                                   impl=cfg.loss_impl),
            "train_throughput_full_logits": measure.throughput(model, cfg.throughput_batch, seq, dev,
                                                               cfg.throughput_steps, train=True, seed=cfg.seed,
                                                               loss="full"),
            "inference_throughput": measure.throughput(model, cfg.throughput_batch, seq, dev,
                                                       cfg.throughput_steps, train=False, seed=cfg.seed),
        }
        per_model[name]["memory_shape"] = [cfg.memory_batch, mem_seq]
        if runs[name].get("compiled"):  # the step compiled training ran: its memory too (informational)
            per_model[name]["memory_compiled"] = _compiled_memory(model, cfg.memory_batch, mem_seq, dev, cfg.seed,
                                                               cfg.compile_memory_budget)
        if name == "stage1":
            trial_seq = min(cfg.trial_seq, model.config.max_seq_len)
            per_model[name]["trials"] = measure.stability_trials(model, cfg.trials, cfg.trial_batch, trial_seq,
                                                                 dev, crit.GRAD_RANGE, cfg.seed)
            per_model[name]["layout"] = measure.planar_layout(model, cfg.trial_batch, trial_seq, dev, cfg.seed)
        models[name] = model.to("cpu")
        _free(dev)
    return save(None)


def _train_vocab(cfg: Stage1BenchConfig) -> int:
    from muse.models.registry import make_config

    model, preset, overrides = _run_spec(cfg, "stage1")
    return make_config(model, preset, **overrides).vocab_size


def _eval_targets(n_eval_tokens: int, limit: int | None) -> int:
    """How many eval targets a whole-split evaluation scores (every token but the first)."""
    n = max(n_eval_tokens - 1, 0)
    return n if limit is None else min(n, limit)


def judge(runs: dict, per_model: dict, unigram: float | None, device_type: str, *, data: dict | None = None,
          preset: str | None = None) -> list[crit.Criterion]:
    """The Stage 1 criteria from the measured numbers (a NaN counts as not measured or failed)."""
    s1, p2 = per_model.get("stage1") or {}, per_model.get("phase2") or {}
    m1, m2 = s1.get("memory") or {}, p2.get("memory") or {}
    mem_note = (f"fused loss ({m1.get('loss_path')} / {m2.get('loss_path')}); measure: {m1.get('measure')}")
    shape = tuple(s1.get("memory_shape") or ())
    if preset == "seed" and shape and shape != SEED_MEMORY_SHAPE:
        mem = crit.Criterion("VRAM vs Phase 2", crit.NOT_MEASURED,
                             f"measured at B={shape[0]}, S={shape[1]}",
                             f"the seed preset is judged at B={SEED_MEMORY_SHAPE[0]}, S={SEED_MEMORY_SHAPE[1]}")
    else:
        mem = crit.vram(m1.get("peak_bytes"), m2.get("peak_bytes"), m1.get("measure"), mem_note)
    data = data or {}
    return [
        crit.trained("Phase 2", runs.get("phase2"), unigram),
        crit.trained("Stage 1", runs.get("stage1"), unigram),
        crit.perplexity_fair(runs.get("stage1"), runs.get("phase2"), runs.get("phase2_nomix"),
                             data.get("train_split"), data.get("eval_split"), data.get("eval_targets")),
        mem,
        crit.nan_rate(s1.get("trials")),
        crit.gradient_norms(s1.get("trials")),
        crit.planar(s1.get("layout")),
    ]


def build_report(cfg: Stage1BenchConfig, stamp: datetime.datetime, command: str, env: dict, data: dict,
                 unigram: float | None, runs: dict, per_model: dict, device_type: str, *,
                 pending: str | None = None) -> dict:
    """The report dict: provenance, every measurement and the judged criteria. ``pending`` names the step a
    partial report was written before (``complete`` is then false); None once every step has run."""
    return {
        "benchmark": "stage1-criteria",
        "date": stamp.isoformat(timespec="seconds"),
        "complete": pending is None,
        "pending": pending,
        "command": command,
        "environment": env,
        "config": dataclasses.asdict(cfg),
        "data": data,
        "unigram_ppl": unigram,
        "runs": runs,
        "measurements": per_model,
        **crit.summarize(judge(runs, per_model, unigram, device_type, data=data, preset=cfg.preset)),
    }


def write_report(report: dict, out: str | Path) -> dict:
    """Write ``out/report.json`` (valid JSON: a NaN/inf measurement becomes null and is listed under
    ``nonfinite_values``) and ``out/report.md``; returns the report as written."""
    out = Path(out)
    written = write_report_json(out / "report.json", report, default=str)
    atomic_write_text(out / "report.md", format_markdown(written))
    return written


_LABELS = {"phase2": "Phase 2", "stage1": "Stage 1", "phase2_nomix": "Phase 2, no mixers", "gpt": "GPT"}


def _mib(m: dict | None) -> str:
    if m and m.get("error"):
        return f"failed: {m['error']}"
    return "not measured" if not m or m.get("peak_bytes") is None else f"{m['peak_bytes'] / 2**20:,.1f} MiB"


def _compiled_vram_line(meas: dict) -> list[str]:
    """The VRAM ratio on the compiled step, where both judged models have it: informational, not judged."""
    s1, p2 = ((meas.get(n) or {}).get("memory_compiled") or {} for n in ("stage1", "phase2"))
    if s1.get("peak_bytes") is None or p2.get("peak_bytes") is None:
        return []
    return ["", f"VRAM vs Phase 2 on the compiled training step (informational; the criterion judges the eager "
                f"step): {s1['peak_bytes'] / 2**20:,.1f} MiB / {p2['peak_bytes'] / 2**20:,.1f} MiB = "
                f"{s1['peak_bytes'] / p2['peak_bytes']:.3f} ({s1['measure']})"]


def _tok_s(m: dict, key: str) -> str:
    return _fmt((m.get(key) or {}).get("tokens_per_second"), ",.0f")


def _compiled(r: dict) -> str:
    """"yes (S s)" or "no": whether a run trained under torch.compile, and its compile time apart (and whether it
    replayed CUDA graphs, and the recompute switches that were on, which change the compiled step's memory)."""
    if r.get("compiled") is None:
        return "n/a"
    if not r["compiled"]:
        return "no"
    graphs = ", CUDA graphs" if r.get("compile_mode") in GRAPH_MODES else ""
    switches = f", recomputes {' and '.join(r['compile_recompute'])}" if r.get("compile_recompute") else ""
    return f"yes ({_fmt(r.get('compile_s'), '.1f')} s{graphs}{switches})"


def _mode(meas: dict) -> str:
    """How the throughput rows ran: "eager", "compiled", or "n/a" when nothing was measured."""
    modes = {t["compiled"] for m in meas.values() if m for k, t in m.items()
             if "_throughput" in k and isinstance(t, dict) and "compiled" in t}
    return "n/a" if not modes else "compiled" if modes == {True} else "eager" if modes == {False} else "eager and compiled"


def _measure(meas: dict) -> str:
    return next((m["memory"]["measure"] for m in meas.values() if m and m.get("memory")), "not measured")


def _agreement(m: dict) -> str:
    if not m.get("memory") or not m.get("memory_full_logits"):
        return "n/a"
    if m["memory"]["agreement"] is None:
        return "n/a (no CUDA)"
    return f"{m['memory']['agreement']:.3f}, {m['memory_full_logits']['agreement']:.3f}"


def _recipe_line(cfg: dict) -> str:
    """The training settings every run shared (the command line omits the defaults)."""
    budget = f"{cfg['max_steps']} steps" if cfg.get("max_steps") else f"{cfg['tokens']:,} tokens"
    return (f"- training, every run: {budget}, batch {cfg['batch_size']}, lr {cfg['lr']:g} -> {cfg['min_lr']:g} "
            f"(warmup {cfg['warmup']}), weight decay {cfg['weight_decay']:g}, seed {cfg['seed']}"
            + (f", Muon on the hidden linear weights (`--optimizer muon`, step RMS {cfg.get('muon_rms', 0.2):g} per unit lr)"
               if cfg.get("optimizer") == "muon" else "")
            + (f", label smoothing {cfg['label_smoothing']:g} (the evals score the plain loss)"
               if cfg.get("label_smoothing") else "")
            + (", the loss keeping its logits (`--keep-logits`)" if cfg.get("keep_logits") else "")
            + (f", compiled under activation memory budget {cfg['compile_memory_budget']:g} (`--compile-memory-budget`)"
               if cfg.get("compile_memory_budget") is not None else ""))


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
        _recipe_line(report["config"]),
    ]
    lines += [f"- **{w}**" for w in report["data"]["warnings"]]
    lines += ["", f"**all_pass: {str(report['all_pass']).lower()}**"
              + (f" (not measured: {', '.join(report['not_measured'])})" if report["not_measured"] else ""), "",
              *([f"**Incomplete: written before {report['pending']}.** The run stopped there (a time limit, a crash) "
                 "or is still going; what it had not reached is judged not measured.", ""]
                if not report.get("complete", True) else []),
              "| criterion | status | value | threshold |", "|---|---|---|---|"]
    for c in report["criteria"]:
        lines.append(f"| {c['name']} | {c['status']} | {c['value']} | {c['threshold']} |")
    lines += _compiled_vram_line(meas)
    names = [n for n in (*MODELS, *REFERENCES) if n in runs]
    if names:
        lines += ["", "Judged: Phase 2 and Stage 1; the other columns are reference runs trained the same way.", "",
                  "| | " + " | ".join(_LABELS.get(n, n) for n in names) + " |",
                  "|---|" + "---|" * len(names)]
    rows = [
        ("model (preset)", lambda n, r, m: f"{r.get('model', n)} ({r.get('preset', 'n/a')})"),
        ("config overrides", lambda n, r, m: ", ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items()) or "none"),
        ("parameters", lambda n, r, m: f"{r['parameters']:,}"),
        ("tokens trained", lambda n, r, m: f"{r['tokens_trained']:,}"),
        ("eval PPL", lambda n, r, m: _fmt(r["eval_ppl"], ".2f")),
        ("eval bits per byte", lambda n, r, m: _fmt(r.get("eval_bits_per_byte"), ".4f")),
        ("eval word-level PPL (whole split scored)", lambda n, r, m: _fmt(r.get("eval_word_ppl"), ".2f")),
        ("eval tokens scored (stride)",
         lambda n, r, m: f"{_fmt(r['eval_tokens_scored'], ',')} ({r.get('eval_stride', 'n/a')})"),
        ("skipped steps", lambda n, r, m: str(r["skipped_steps"])),
        ("trained compiled (compile s)", lambda n, r, m: _compiled(r)),
        ("train tok/s during training (first step, so compile, included)",
         lambda n, r, m: _fmt(r["train_tokens_per_s"], ",.0f")),
        ("train tok/s during training, steady step", lambda n, r, m: _fmt(r.get("steady_tokens_per_s"), ",.0f")),
        (f"peak memory fwd+loss+bwd, fused loss, eager ({_measure(meas)})", lambda n, r, m: _mib(m.get("memory"))),
        ("fused loss path", lambda n, r, m: (m.get("memory") or {}).get("loss_path", "n/a")),
        ("peak memory fwd+loss+bwd, the compiled training step (informational)",
         lambda n, r, m: _mib(m.get("memory_compiled")) if r.get("compiled") else "not measured (trained eager)"),
        ("peak memory, full logits (informational)", lambda n, r, m: _mib(m.get("memory_full_logits"))),
        ("live tensor bytes / cuda.max_memory_allocated (fused, full)", lambda n, r, m: _agreement(m)),
        (f"train tok/s, fused loss ({_mode(meas)})", lambda n, r, m: _tok_s(m, "train_throughput")),
        (f"train tok/s, full logits ({_mode(meas)})", lambda n, r, m: _tok_s(m, "train_throughput_full_logits")),
        (f"inference tok/s ({_mode(meas)})", lambda n, r, m: _tok_s(m, "inference_throughput")),
    ]
    for label, fn in rows if names else ():
        cells = []
        for n in names:
            r, m = runs[n], meas.get(n)
            cells.append(f"failed: {r['error']}" if r.get("error") else fn(n, r, m or {}))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    curves = {n: runs[n].get("eval_curve") for n in names if runs[n].get("eval_curve")}
    if curves:
        lines += ["", "Eval loss during training (a fixed subset of the eval split; is a model still improving?):", ""]
        for n, curve in curves.items():
            pts = ", ".join(f"{c['step']}: {_fmt(c['loss'], '.3f')}" for c in curve)
            lines.append(f"- {_LABELS.get(n, n)}: {pts}")
    lines += ["", f"Unigram PPL of the training text on the scored eval tokens: {_fmt(report['unigram_ppl'], '.2f')}"]
    if report.get("nonfinite_values"):
        lines.append(f"Non-finite measurements (written as null): {', '.join(report['nonfinite_values'])}")
    lines.append("")
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)
