"""The training loop: data -> model -> loss -> optimizer step, with evals, logs and checkpoints.

One ``Trainer`` per process. Under ``torchrun`` each rank trains on its slice of every
global batch (``TrainBlocks(..., rank, world_size)``) through DDP; rank 0 alone writes logs,
checkpoints and results, and every collective (loss logging, evals, RNG gathering, the
found-inf flag) is reached by all ranks at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import gc
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from muse._io import check_output_dir, remove_stale_temps, write_json
from muse.complex.recompute import compile_switches
from muse.data import TrainBlocks, tokens_sha256
from muse.models.compile import (
    GRAPH_MODES,
    compile_model,
    resolve_compile,
    resolve_compile_mode,
    set_memory_budget,
)
from muse.models.registry import MODELS, make_config
from muse.train import checkpoint as ckpt_io
from muse.train.config import TRAJECTORY_FIELDS, TrainConfig
from muse.train.data import RunData, load_run_data
from muse.train.distributed import DistContext, barrier, init_distributed, shutdown, wrap_ddp
from muse.train.evaluate import evaluate
from muse.train.loss import compile_model_loss, loss_path, model_loss
from muse.train.optim import (
    FullPrecisionOptimizer,
    MixedPrecisionOptimizer,
    decay_parameter_names,
    muon_parameter_names,
)
from muse.train.runlog import (
    JsonlLog,
    environment,
    peak_memory,
    plot_loss_curve,
    results_table,
)
from muse.train.scaler import DynamicLossScaler
from muse.train.schedule import check_schedule, lr_at


class TrainingError(RuntimeError):
    """A run whose result must not be trusted: too many skipped steps or a non-finite eval loss."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """A per-rank seed for the training-time RNG stream (dropout), independent of the init stream."""
    return int(np.random.SeedSequence([seed, rank, 0x7EA1]).generate_state(1)[0])


def config_dict(config) -> dict:
    """A model config as plain JSON data (its own ``to_dict`` when it has one)."""
    data = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
    return json.loads(json.dumps(data))


def train(cfg: TrainConfig, data: RunData | None = None) -> dict:
    """Train as ``cfg`` says (under torchrun: as one rank); returns the results dict."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    ctx = init_distributed(cfg.device, cfg.dist_backend)
    clean, trainer, budget = False, None, set_memory_budget(None)
    try:
        trainer = Trainer(cfg, ctx, data)
        results = trainer.run()
        clean = True
    finally:
        trainer = None  # drop the DDP wrapper (its reducer uses the group) before the group goes
        gc.collect()
        set_memory_budget(budget)  # the process-wide setting as it was
        shutdown(ctx, synchronize=clean)
    return results



def check_label_smoothing(cfg: TrainConfig, model_config) -> None:
    """ValueError for label smoothing on a model with a copy path (``pointer_dim`` > 0): the loss mixes the
    head's and the copy distribution, which has no vocabulary mean to smooth towards."""
    if cfg.label_smoothing and getattr(model_config, "pointer_dim", 0):
        raise ValueError(f"label_smoothing (--label-smoothing) must be 0 for a model with a copy path "
                         f"({cfg.model} {cfg.preset} has pointer_dim={model_config.pointer_dim}), "
                         f"got {cfg.label_smoothing}")

class Trainer:
    """State of one training process; build with a config, call :meth:`run`."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext, data: RunData | None = None):
        self.cfg, self.ctx, self.start_time = cfg, ctx, time.perf_counter()
        if ctx.device.type == "cuda":  # results report this run's peak, not the process's
            torch.cuda.reset_peak_memory_stats(ctx.device)
        if cfg.model not in MODELS:
            raise ValueError(f"unknown model {cfg.model!r}; choose one of {sorted(MODELS)}")
        self.model_config = make_config(cfg.model, cfg.preset, **cfg.model_overrides)
        check_label_smoothing(cfg, self.model_config)
        self.model_config_dict = config_dict(self.model_config)
        self.out = check_output_dir("out (--out)", self._out_dir())
        if ctx.is_main:
            for name in ("last.safetensors", "best.safetensors", "results.json", "log.jsonl"):
                remove_stale_temps(self.out, name)  # left by a killed writer
        seed_everything(cfg.seed)
        self.model = MODELS[cfg.model].model_cls(self.model_config, device=ctx.device)
        self.fp16 = any(p.dtype == torch.float16 for p in self.model.parameters())
        self.loss_path = loss_path(self.model.lm_head.weight.dtype, autocast=cfg.amp is not None)
        self._check_amp()
        max_len = self.model_config.max_seq_len
        self.seq_len = cfg.seq_len if cfg.seq_len is not None else max_len
        if self.seq_len > max_len:
            raise ValueError(f"seq_len ({self.seq_len}) exceeds the model's max_seq_len ({max_len})")
        self.data = data if data is not None else self._load_data()
        self._check_vocab()
        self.train_sha256 = tokens_sha256(np.asarray(self.data.train))
        self.blocks = TrainBlocks(self.data.train, self.seq_len, cfg.batch_size, cfg.seed,
                                  rank=ctx.rank, world_size=ctx.world_size)
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * ctx.world_size * self.seq_len
        self.total_steps = self._total_steps()
        try:
            check_schedule(cfg.lr, cfg.min_lr, cfg.warmup, self.total_steps)
        except ValueError as exc:
            raise ValueError(f"{exc} (warmup is --warmup; steps come from --max-steps/--tokens)") from None
        self.optimizer = self._make_optimizer()
        self.ddp = wrap_ddp(self.model, ctx) if ctx.distributed else None
        # Compiled wrappers share the model's parameters; checkpoints save self.model (plain keys).
        self.compiled = resolve_compile(cfg.compile, ctx.device)
        if cfg.compile_mode is not None and not self.compiled:
            raise ValueError(f"compile_mode={cfg.compile_mode!r} (--compile-mode) needs a compiled run; compile is "
                             f"off here (pass --compile; it is off by default on {ctx.device.type})")
        if cfg.compile_mode in GRAPH_MODES and ctx.device.type != "cuda":
            raise ValueError(f"compile_mode={cfg.compile_mode!r} (--compile-mode) replays CUDA graphs: it needs a CUDA "
                             f"device, got {ctx.device.type} (torch would skip the graphs and say nothing in the results)")
        base = self.ddp if self.ddp is not None else self.model
        if cfg.compile_memory_budget is not None and not self.compiled:
            raise ValueError(f"compile_memory_budget={cfg.compile_memory_budget} needs a compiled run; compile is "
                             f"off here (pass --compile; it is off by default on {ctx.device.type})")
        self.recompute = compile_switches() if self.compiled else None  # the environment read when tracing
        previous = set_memory_budget(cfg.compile_memory_budget if self.compiled else None)  # train() restores it
        self.memory_budget = previous if cfg.compile_memory_budget is None else cfg.compile_memory_budget
        self.compile_mode = resolve_compile_mode(cfg.compile_mode, compiled=self.compiled, device=ctx.device,
                                                 distributed=self.ddp is not None, backend=cfg.compile_backend)
        # DDP compiles its wrapper in the resolved mode: under CUDA graphs the pieces it splits at its gradient
        # buckets replay from graphs, the all-reduces between them.
        self.net = (compile_model(base, backend=cfg.compile_backend,
                                  mode=self.compile_mode if self.ddp is not None else None)
                    if self.compiled else base)
        self.eval_model = compile_model(self.model, backend=cfg.compile_backend) if self.compiled else self.model
        # Single process: the model and the chunked loss compile as one graph; DDP keeps its compiled wrapper.
        self.loss_fn = (compile_model_loss(self.model, backend=cfg.compile_backend, mode=self.compile_mode,
                                           keep_logits=cfg.keep_logits, label_smoothing=cfg.label_smoothing)
                        if self.compiled and self.ddp is None
                        else functools.partial(model_loss, self.net, keep_logits=cfg.keep_logits,
                                               label_smoothing=cfg.label_smoothing))
        self.step_times: list[float] = []  # this process's first steps; the first includes compiling
        self.step, self.tokens_seen, self.train_time = 0, 0, 0.0
        self.best_eval, self.last_train_loss, self.final_eval = math.inf, None, None
        self.log = JsonlLog(self.out / "log.jsonl")
        self.resumed_from, self.pbar = None, None
        seed_everything(rank_seed(cfg.seed, ctx.rank))  # the training stream, after init
        if cfg.resume is not None:
            self._resume(cfg.resume)
        else:
            if (self.out / "last.safetensors").exists():  # every rank checks, so every rank stops
                raise ValueError(f"{self.out} already holds a run (last.safetensors); pass --resume "
                                 f"{self.out / 'last.safetensors'} to continue it or choose another --out")
            if ctx.is_main and self.log.path.exists():
                self.log.truncate_after(-1)  # a fresh run starts a fresh log

    # ----------------------------------------------------------------- setup
    def _out_dir(self) -> Path:
        if self.cfg.out is not None:
            return Path(self.cfg.out)
        if self.cfg.resume is not None:
            return Path(self.cfg.resume).parent
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{self.cfg.model}-{self.cfg.preset}-{stamp}"

    def _check_amp(self) -> None:
        if self.cfg.amp is None:
            return
        if self.fp16:
            raise ValueError("--amp is for fp32 models (phase2); Stage 1 already runs fp16 with its own loss scaling")
        if self.ctx.device.type != "cuda":
            raise ValueError(f"--amp {self.cfg.amp} needs a CUDA device, this run uses {self.ctx.device}")

    def _load_data(self) -> RunData:
        data = None
        if self.ctx.is_main:  # rank 0 tokenises (and fills the cache) first
            data = load_run_data(self.cfg)
        barrier(self.ctx)
        return data if data is not None else load_run_data(self.cfg)

    def _check_vocab(self) -> None:
        vocab = self.model_config.vocab_size
        for name, arr in (("training", self.data.train), ("eval", self.data.eval)):
            top = int(np.asarray(arr).max())
            if top >= vocab:
                raise ValueError(f"the {name} tokens contain id {top}, out of range for vocab_size={vocab}")

    def _total_steps(self) -> int:
        if self.cfg.max_steps is not None:
            return self.cfg.max_steps
        budget = self.cfg.tokens
        if budget is None:  # one pass over the training split
            budget = self.blocks.batches_per_epoch * self.blocks.global_batch * self.seq_len
        return max(1, math.ceil(budget / self.tokens_per_step))

    def _make_optimizer(self):
        cfg, named = self.cfg, list(self.model.named_parameters())
        decay = decay_parameter_names(self.model, embeddings=cfg.decay_embeddings)
        no_decay = {n for n, _ in named if n not in decay}
        muon = muon_parameter_names(self.model) if cfg.optimizer == "muon" else set()
        kw = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, no_decay=no_decay - muon,
                  muon=muon, muon_rms=cfg.muon_rms)
        if self.fp16:
            scaler = DynamicLossScaler(cfg.init_scale, growth_interval=cfg.growth_interval)
            return MixedPrecisionOptimizer(named, loss_scaler=scaler, **kw)
        return FullPrecisionOptimizer(named, amp_fp16=cfg.amp == "fp16", **kw)

    def trajectory(self) -> dict:
        """The settings a resumed run must share with the checkpoint (plus the resolved step count)."""
        full = self.cfg.to_dict()
        out = {k: full[k] for k in TRAJECTORY_FIELDS}
        out.update(total_steps=self.total_steps, world_size=self.ctx.world_size, seq_len=self.seq_len)
        return out

    # ----------------------------------------------------------------- checkpoints
    def _resume(self, path: str) -> None:
        ck = ckpt_io.load_checkpoint(path)
        ckpt_io.check_compatible(ck, self.cfg.model, self.model_config_dict, self.trajectory())
        if ck.world_size != self.ctx.world_size:
            raise ValueError(f"checkpoint was written by {ck.world_size} rank(s), this run has {self.ctx.world_size}")
        saved_sha = ck.train_config.get("train_data_sha256")
        if saved_sha is not None and saved_sha != self.train_sha256:
            raise ValueError(f"{path}: the training tokens differ from the ones the checkpoint was trained on "
                             f"(sha256 {saved_sha[:16]}... vs {self.train_sha256[:16]}...); resume needs the same data")
        bad = ckpt_io.nonfinite_tensors(ck)
        if bad:
            raise ValueError(f"{path}: checkpoint holds NaN/inf values in {bad[:3]}"
                             + (f" and {len(bad) - 3} more tensors" if len(bad) > 3 else "")
                             + "; resuming would continue a diverged run")
        ckpt_io.load_model_state(self.model, ck, path)
        self.optimizer.load_state(ck.tensors, ck.optimizer)
        self.blocks.load_state_dict(ck.data_state)
        c = ck.counters
        self.step, self.tokens_seen, self.train_time = c["step"], c["tokens_seen"], c["train_time_s"]
        self.best_eval = c["best_eval_loss"] if c["best_eval_loss"] is not None else math.inf
        self.last_train_loss = c["last_train_loss"]
        ckpt_io.set_rng_state(ck.prefixed(f"rng.{self.ctx.rank}."))
        self.resumed_from = str(path)
        if self.ctx.is_main:
            self.log.truncate_after(self.step)

    def save_checkpoint(self, name: str = "last.safetensors") -> Path:
        """All ranks call this (RNG states are gathered); rank 0 writes ``out/name`` atomically."""
        rng = ckpt_io.gather_rng(self.ctx.device, self.ctx.world_size)
        path = self.out / name
        if self.ctx.is_main:
            tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            tensors.update(self.optimizer.state_tensors())
            tensors.update(rng)
            counters = {"step": self.step, "tokens_seen": self.tokens_seen, "train_time_s": self.train_time,
                        "best_eval_loss": self.best_eval if math.isfinite(self.best_eval) else None,
                        "last_train_loss": self.last_train_loss, "skipped_steps": self.optimizer.skipped_steps}
            meta = ckpt_io.build_metadata(
                model_name=self.cfg.model, model_config=self.model_config_dict,
                train_config=self.cfg.to_dict() | self.trajectory() | {"train_split_used": self.data.train_split,
                                                                        "train_data_sha256": self.train_sha256}, optimizer=self.optimizer.state_meta(),
                data_state=self.blocks.state_dict(), counters=counters, world_size=self.ctx.world_size)
            ckpt_io.atomic_save(tensors, meta, path)
        barrier(self.ctx)
        return path

    # ----------------------------------------------------------------- loop
    def train_step(self) -> tuple[torch.Tensor, object]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (mean loss, StepResult)."""
        cfg = self.cfg
        self.optimizer.set_lr(lr_at(self.step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup,
                                    total_steps=self.total_steps))
        self.optimizer.zero_grad(accumulate=cfg.grad_accum > 1)
        loss_sum = torch.zeros((), dtype=torch.float32, device=self.ctx.device)
        for micro in range(cfg.grad_accum):
            inputs, targets = (self._to_device(t) for t in next(self.blocks))
            last = micro == cfg.grad_accum - 1
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with self._autocast():  # the loss's GEMMs too run in the autocast dtype
                    loss = self.loss_fn(inputs, targets) / cfg.grad_accum  # equal-sized micro-batches
                self.optimizer.backward(loss)
            loss_sum += loss.detach()
        result = self.optimizer.step(cfg.clip if cfg.clip > 0 else None)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return loss_sum, result

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.ctx.device.type == "cuda":
            return t.pin_memory().to(self.ctx.device, non_blocking=True)
        return t

    def _autocast(self):
        if self.cfg.amp is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _global_mean(self, value: torch.Tensor) -> float:
        if self.ctx.distributed:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.ctx.world_size
        return float(value.item())

    def _check_skips(self) -> None:
        skipped, cfg = self.optimizer.skipped_steps, self.cfg
        if skipped > cfg.skip_grace + cfg.max_skip_fraction * self.step:
            raise TrainingError(
                f"{skipped} of {self.step} optimizer steps were skipped for non-finite gradients "
                f"(loss scale now {self.optimizer.loss_scale:g}); more than skip_grace={cfg.skip_grace} + "
                f"max_skip_fraction={cfg.max_skip_fraction} x steps. The run is not trustworthy.")

    def run_eval(self, max_tokens: int | None, stride: int | None = None, final: bool = False) -> dict:
        """Evaluate on the eval split (all ranks); log it; non-finite loss raises TrainingError."""
        t0 = time.perf_counter()
        res = evaluate(self.eval_model, self.data.eval, self.seq_len, self.cfg.eval_batch_size or self.cfg.batch_size,
                       stride=stride, max_tokens=max_tokens, rank=self.ctx.rank, world_size=self.ctx.world_size,
                       token_bytes=self.data.eval_token_bytes, word_tokens=self.data.eval_word_tokens)
        record = {"type": "eval", "step": self.step, "tokens": self.tokens_seen, "final": final,
                  "split": self.data.eval_split, **res, "eval_s": time.perf_counter() - t0}
        if not math.isfinite(res["loss"]):
            raise TrainingError(f"eval loss is {res['loss']} at step {self.step}: the model diverged")
        units = "".join(f", {label} {res[key]:.{digits}f}" for key, label, digits in
                        (("bits_per_byte", "bits/byte", 4), ("word_ppl", "word-level ppl", 2)) if res[key] is not None)
        self._emit(record, f"eval step {self.step}: loss {res['loss']:.4f}, ppl {res['ppl']:.2f}{units} "
                           f"({res['tokens_scored']:,} tokens)")
        return res

    def _emit(self, record: dict, line: str, echo: bool = True) -> None:
        """Rank 0: append ``record`` to the JSONL log (non-finite floats as null) and echo ``line``."""
        if not self.ctx.is_main:
            return
        self.log.write({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()})
        if not echo:
            return
        if self.pbar is not None and not self.pbar.disable:
            self.pbar.write(line)
        else:
            print(line, flush=True)

    def run(self) -> dict:
        from tqdm.auto import tqdm

        cfg, ctx = self.cfg, self.ctx
        end = self.total_steps if cfg.stop_after is None else min(cfg.stop_after, self.total_steps)
        show = cfg.progress and ctx.is_main and sys.stderr.isatty()
        self.pbar = tqdm(total=self.total_steps, initial=self.step, disable=not show, unit="step", dynamic_ncols=True)
        if ctx.is_main:
            print(self.describe(), flush=True)
        status, error = "failed", None
        try:
            self._loop(end)
            done = self.step >= self.total_steps
            self.save_checkpoint()
            if done:
                self.final_eval = self.run_eval(cfg.final_eval_tokens, cfg.eval_stride, final=True)
            status = "completed" if done else "stopped"
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, KeyboardInterrupt):
                status = "interrupted"
                if ctx.is_main:
                    print(f"interrupted at step {self.step}; the last checkpoint written (if any) is kept: "
                          f"{self.out / 'last.safetensors'}", file=sys.stderr, flush=True)
            raise
        finally:
            self.pbar.close()
            if ctx.is_main:
                results = self.results(status, error)
                self._write_records(results, failing=error is not None)
                if error is None:
                    print(results_table(results), flush=True)
        return results if ctx.is_main else {}

    def _write_records(self, results: dict, failing: bool) -> None:
        """results.json and loss.png. The plot is a convenience: its failure only warns. While an
        error is propagating nothing here may replace it, so a failed write only warns too."""
        try:
            write_json(self.out / "results.json", results)
        except Exception as exc:
            if not failing:
                raise
            print(f"warning: could not write results.json: {exc}", file=sys.stderr)
        try:
            plot_loss_curve(self.log.records(), self.out / "loss.png",
                            f"{self.cfg.model}/{self.cfg.preset} on {self.data.train_split}")
        except Exception as exc:
            print(f"warning: could not draw loss.png: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _loop(self, end: int) -> None:
        cfg = self.cfg
        mark_time, mark_tokens = time.perf_counter(), self.tokens_seen
        while self.step < end:
            t_step = time.perf_counter()
            loss, res = self.train_step()
            self._check_skips()
            if self.step % cfg.log_every == 0 or self.step == end:
                loss_value = self._global_mean(loss)  # syncs the device: timings below are real
                now = time.perf_counter()
                tok_s = (self.tokens_seen - mark_tokens) / max(now - mark_time, 1e-9)
                self.last_train_loss = loss_value
                record = {"type": "train", "step": self.step, "tokens": self.tokens_seen, "loss": loss_value,
                          "lr": self.optimizer.inner.param_groups[0]["lr"], "loss_scale": res.loss_scale,
                          "skipped_steps": self.optimizer.skipped_steps, "grad_norm": res.grad_norm,
                          "tok_per_s": tok_s, "elapsed_s": self.train_time + now - t_step}
                self.pbar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)
                self._emit(record, f"step {self.step}/{self.total_steps}: loss {loss_value:.4f}, "
                                   f"lr {record['lr']:.3e}, scale {res.loss_scale:g}, "
                                   f"skipped {record['skipped_steps']}, {tok_s:,.0f} tok/s",
                           echo=self.pbar.disable)
                mark_time, mark_tokens = now, self.tokens_seen
            self.train_time += time.perf_counter() - t_step
            if len(self.step_times) < 21:
                if self.ctx.device.type == "cuda":
                    torch.cuda.synchronize(self.ctx.device)
                self.step_times.append(time.perf_counter() - t_step)
            self.pbar.update(1)
            pause = time.perf_counter()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < self.total_steps:
                res_eval = self.run_eval(cfg.eval_tokens)
                if cfg.save_best and res_eval["loss"] < self.best_eval:
                    self.best_eval = res_eval["loss"]
                    self.save_checkpoint("best.safetensors")
                self.best_eval = min(self.best_eval, res_eval["loss"])
            every = cfg.ckpt_every if cfg.ckpt_every is not None else cfg.eval_every
            if every and self.step % every == 0 and self.step < end:
                self.save_checkpoint()
            mark_time += time.perf_counter() - pause  # evals and checkpoints do not count as training time

    # ----------------------------------------------------------------- reporting
    def _steady_tokens_per_s(self) -> float | None:
        """Tokens a second of a steady step (the median after the first: compile and warm-up excluded)."""
        steady = _compile_estimate(self.step_times)["steady_step_s"]
        return self.tokens_per_step / steady if steady else None

    def compile_record(self) -> dict:
        """Whether the model ran compiled, and compile time (first step minus a steady step) apart; for a compiled
        run its activation memory budget and recompute switches (``muse.complex.recompute.compile_switches``).

        An eager run has no compile time: its ``compile_s`` is None, its first step's overhead stays in
        ``first_step_s``."""
        times = _compile_estimate(self.step_times)
        if not self.compiled:
            times["compile_s"] = None
        return {"compiled": self.compiled, "compile_backend": self.cfg.compile_backend if self.compiled else None,
                "compile_mode": self.compile_mode,
                "compile_memory_budget": self.memory_budget if self.compiled else None,
                "compile_recompute": self.recompute, **times}

    def describe(self) -> str:
        """The run's configuration, nanoGPT style, printed at start."""
        lines = [f"{k} = {v!r}" for k, v in self.cfg.to_dict().items()]
        lines += [
            f"model config = {self.model_config_dict}",
            f"parameters = {sum(p.numel() for p in self.model.parameters()):,}",
            f"device = {self.ctx.device}, world_size = {self.ctx.world_size}, compiled = {self.compiled}",
            f"precision = {'fp16 params + fp32 masters + dynamic loss scaling' if self.fp16 else 'fp32'}"
            + (f" (autocast {self.cfg.amp})" if self.cfg.amp else ""),
            f"loss = {self.loss_path} linear cross-entropy (no full logits)",
            f"seq_len = {self.seq_len}, tokens/step = {self.tokens_per_step:,}, total steps = {self.total_steps:,}",
            f"train split = {self.data.train_split} ({len(self.data.train):,} tokens, {self.data.train_source}); "
            f"eval split = {self.data.eval_split} ({len(self.data.eval):,} tokens)",
            f"out = {self.out}" + (f", resumed from {self.resumed_from} at step {self.step}" if self.resumed_from else ""),
        ]
        if self.data.train_split_warning:
            lines.append(self.data.train_split_warning)
        return "\n".join(lines)

    def results(self, status: str, error: str | None) -> dict:
        stats = self.model.get_statistics() if hasattr(self.model, "get_statistics") else None
        trained_here = self.tokens_seen
        return {
            "status": status,
            "error": error,
            "environment": environment(self.ctx.device),
            "model": {"name": self.cfg.model, "preset": self.cfg.preset,
                      "config": self.model_config_dict,
                      "parameters": sum(p.numel() for p in self.model.parameters())},
            "train_config": self.cfg.to_dict(),
            "world_size": self.ctx.world_size,
            "dist_backend": self.ctx.backend,
            "train_split": self.data.train_split,
            "train_split_warning": self.data.train_split_warning,
            "eval_split": self.data.eval_split,
            "data": {"train_source": self.data.train_source, "eval_source": self.data.eval_source,
                     "train_tokens_available": int(len(self.data.train)),
                     "eval_tokens_available": int(len(self.data.eval))},
            "seq_len": self.seq_len,
            "tokens_per_step": self.tokens_per_step,
            "steps": self.step,
            "total_steps": self.total_steps,
            "tokens_seen": self.tokens_seen,
            "skipped_steps": self.optimizer.skipped_steps,
            "skipped_fraction": self.optimizer.skipped_steps / max(self.step, 1),
            "loss_scale": self.optimizer.loss_scale,
            "loss_path": self.loss_path,
            "final_train_loss": _finite(self.last_train_loss),
            "final_eval": self.final_eval,
            "best_periodic_eval_loss": self.best_eval if math.isfinite(self.best_eval) else None,
            "wall_time_s": time.perf_counter() - self.start_time,
            "train_time_s": self.train_time,
            "train_tokens_per_s": trained_here / self.train_time if self.train_time > 0 else None,
            **self.compile_record(),
            "steady_tokens_per_s": self._steady_tokens_per_s(),
            "peak_memory": peak_memory(self.ctx.device),
            "model_statistics": stats,
            "resumed_from": self.resumed_from,
            "files": {"log": "log.jsonl", "loss_curve": "loss.png", "checkpoint": "last.safetensors"},
        }


def _compile_estimate(step_times: list[float]) -> dict:
    """First step of this process vs the median of the next ones: the difference is compile time."""
    if not step_times:
        return {"first_step_s": None, "steady_step_s": None, "compile_s": None}
    rest = sorted(step_times[1:])
    steady = rest[len(rest) // 2] if rest else None
    return {"first_step_s": step_times[0], "steady_step_s": steady,
            "compile_s": None if steady is None else max(step_times[0] - steady, 0.0)}


def _finite(value):
    return value if value is not None and math.isfinite(value) else None
