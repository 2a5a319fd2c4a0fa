"""``muse bench stage1`` (the Stage 1 criteria vs Phase 2) and ``muse bench speed`` (ceilings, ops, models)."""

from __future__ import annotations

import argparse

from muse.cli._compile import add_compile_flag

MODEL_ROWS = ("stage1", "complex64", "gpt", "phase2")  # benchmarks.speed.MODEL_ROWS, without importing torch
VARIANTS = ("eager", "kernels", "compiled", "compiled+kernels", "compiled+cudagraphs")  # the default rows
MORE_VARIANTS = ("compiled+kernels+cudagraphs", "compiled+traced-loss", "compiled+kernels+cudagraphs+traced-loss",
                 "compiled+kernels+autotune", "compiled+kernels+autotune+traced-loss",
                 "compiled+kernels+cudagraphs+keep-logits", "compiled+kernels+cudagraphs+half-weights",
                 "compiled+kernels+cudagraphs+keep-logits+half-weights")


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark runners (stage1: the Stage 1 criteria vs Phase 2; speed: eager/compiled/kernels)",
        description="Benchmark runners. 'stage1' trains Stage 1 and Phase 2 under identical settings, "
        "measures perplexity, peak memory, throughput, NaN rate, gradient norms and the planar layout, "
        "and reports each criterion as pass / fail / not_measured; its report is rewritten before each step, so "
        "a run stopped early leaves what it measured, marked incomplete. Options left out take the defaults of "
        "benchmarks.stage1.Stage1BenchConfig (CPU quick start: tiny preset, 131,072 tokens per model).",
        epilog="examples:\n"
        "  muse bench stage1 --preset tiny --train-split valid          # CPU: memory as live tensor bytes\n"
        "  muse bench stage1 --preset seed --device cuda --tokens 5000000 "
        "--tokens-npy train.npy --eval-tokens-npy test.npy\n"
        "  muse bench stage1 --preset seed --stage1-preset mix --device cuda   # the mix Stage 1 vs Phase 2\n"
        "  muse bench speed --preset seed --batch-size 4 --device cuda --out runs/speed-h200\n"
        "  muse bench speed --preset tiny --vocab-size 512 --device cpu --compile-backend aot_eager",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("which", choices=["stage1", "speed"], help="which benchmark")
    g = p.add_argument_group("models and training (identical for every run)")
    g.add_argument("--preset")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--tokens", type=int, help="training tokens per model")
    g.add_argument("--max-steps", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seq-len", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--min-lr", type=float)
    g.add_argument("--warmup", type=int)
    g.add_argument("--dropout", type=float, help="override both models' dropout")
    g.add_argument("--stage1-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a Stage 1 config field for the Stage 1 model only, e.g. mixer=recurrence "
                        "(VALUE parsed as JSON, else a string); repeatable")
    g.add_argument("--phase2-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a Phase 2 config field for Phase 2 and its mixer-free reference only, e.g. "
                        "zeta_scale=1.0; repeatable")
    g.add_argument("--keep-logits", action="store_true", default=None,
                   help="every training run's loss keeps its chunks' logits for backward (faster, the full logits' "
                   "memory; the criteria's memory row keeps the default loss)")
    g.add_argument("--compile-memory-budget", type=float, metavar="FRACTION",
                   help="compiled training runs (and their compiled-step memory row): the compiler's activation "
                   "memory budget in (0, 1]; lower recomputes more in backward (`muse train --compile-memory-budget`)")
    g.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune"],
                   help="compiled training runs' torch.compile mode (`muse train --compile-mode`; default: "
                   "reduce-overhead, CUDA graphs, in one CUDA process)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay on linear weights, every run (default 0.1; the GPU budget's runs use 3.0)")
    g.add_argument("--optimizer", choices=["adamw", "muon"],
                   help="every run's optimizer (default adamw; muon: Muon on the hidden linear weights, `muse train --optimizer`)")
    g.add_argument("--muon-rms", type=float, help="with --optimizer muon: the step's RMS per weight at unit lr (default 0.2)")
    g.add_argument("--label-smoothing", type=float, metavar="EPS",
                   help="every run's training-loss label smoothing in [0, 1) (default 0; evals score the plain loss)")
    g.add_argument("--seed", type=int)
    g.add_argument("--stage1-preset", help="Stage 1's preset when it differs from --preset (e.g. mix)")
    g.add_argument("--references", help="comma-separated reference runs trained the same way "
                   "(default phase2_nomix,gpt; 'none' for none). phase2_nomix is needed for the PPL criterion")
    d = p.add_argument_group("data")
    d.add_argument("--train-split", choices=["train", "valid"])
    d.add_argument("--eval-split", choices=["valid", "test"])
    d.add_argument("--data-dir")
    d.add_argument("--tokenizer-dir")
    d.add_argument("--cache-dir")
    d.add_argument("--tokens-npy", help="pre-tokenised uint16 training tokens (.npy)")
    d.add_argument("--eval-tokens-npy", help="pre-tokenised uint16 eval tokens (.npy)")
    d.add_argument("--offline", action="store_true", default=None, help="never contact the Hugging Face hub")
    d.add_argument("--final-eval-tokens", type=int, help="bound the final eval (default: whole split)")
    d.add_argument("--eval-stride", type=int, help="final-eval window stride, the same for every run "
                   "(default: half a window, so context-using models are not penalised at window starts)")
    d.add_argument("--eval-every", type=int, help="periodic eval every N steps (default: 8 per run; 0: off)")
    d.add_argument("--eval-curve-tokens", type=int, help="eval targets per periodic eval (default 16384)")
    m = p.add_argument_group("measurements")
    m.add_argument("--memory-batch", type=int)
    m.add_argument("--memory-seq", type=int)
    m.add_argument("--throughput-batch", type=int)
    m.add_argument("--throughput-steps", type=int)
    m.add_argument("--trials", type=int)
    m.add_argument("--trial-batch", type=int)
    m.add_argument("--trial-seq", type=int)
    m.add_argument("--loss-impl", choices=["fused", "auto", "torch-native", "chunked", "chunked-tokens"],
                   help="fused linear cross-entropy for the memory and throughput rows (default fused: each "
                   "model's own path fully visible to the live-tensor-bytes measure, chunked for fp16 heads "
                   "and chunked-tokens for fp32 ones)")
    s = p.add_argument_group("speed only")
    s.add_argument("--models", help=f"comma-separated rows (default all: {','.join(MODEL_ROWS)})")
    s.add_argument("--variants", help=f"comma-separated (default: {','.join(VARIANTS)}; also "
                   f"{','.join(MORE_VARIANTS)}: traced-loss lets the compiler trace the loss's chunk loops; "
                   "autotune compiles with mode max-autotune, CUDA only, minutes of compile time; keep-logits: "
                   "the loss keeps its chunks' logits for backward instead of recomputing them; half-weights: "
                   "an fp32 model run in its autocast dtype (the GPT: bf16) run from 16-bit weights without autocast, "
                   "inference and fwd+bwd (16-bit gradients, as Stage 1's))")
    s.add_argument("--vocab-size", type=int, help="override vocab_size of every model (small CPU runs)")
    s.add_argument("--d-model", type=int, help="override d_model")
    s.add_argument("--n-layers", type=int, help="override n_layers")
    s.add_argument("--compile-backend", choices=["inductor", "aot_eager", "eager"],
                   help="torch.compile backend of the compiled variants (default inductor)")
    s.add_argument("--cpu-repeats", type=int, help="timed repeats per measurement on CPU (default 3)")
    s.add_argument("--no-ops", action="store_true", default=None,
                   help="models only: skip the op rows (layer_norm, modReLU, the complex linear), a minute or more on CUDA")
    s.add_argument("--amp", choices=["bf16", "fp16"],
                   help="autocast on CUDA for fp32 models other than the GPT, which always runs bf16 (Phase 2)")
    add_compile_flag(p)
    p.add_argument("--out", help="output directory (default runs/bench-<which>-<preset>-<time>)")
    p.add_argument("--progress", action="store_true", default=None, help="show tqdm progress bars")
    p.add_argument("--require-pass", action="store_true", help="exit 1 unless every criterion passed")
    p.set_defaults(func=run)


STAGE1_ONLY = ("phase2_arg", "weight_decay", "optimizer", "muon_rms", "label_smoothing", "stage1_preset", "references", "keep_logits", "compile_memory_budget",
               "compile_mode")
SPEED_ONLY = ("models", "variants", "vocab_size", "d_model", "n_layers", "compile_backend", "cpu_repeats", "amp", "no_ops")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import shlex
    import sys

    if args.which == "speed":
        return run_speed(args)
    speed_only = [f"--{k.replace('_', '-')}" for k in SPEED_ONLY if getattr(args, k, None) is not None]
    if speed_only:
        raise ValueError(f"{', '.join(speed_only)}: options of `muse bench speed`, not of `muse bench stage1`")

    from benchmarks.stage1 import Stage1BenchConfig, format_markdown, run_stage1_benchmark
    from muse.cli.train import parse_key_values

    fields = {f.name for f in dataclasses.fields(Stage1BenchConfig)}

    given = {k: v for k, v in vars(args).items() if v is not None and k in fields}
    if args.dropout is not None:
        given["model_overrides"] = {"dropout": args.dropout}
    if args.references is not None:
        given["references"] = tuple(r for r in args.references.split(",") if r and r != "none")
    if args.compile is not None:
        given["compile"] = args.compile
    if args.stage1_arg:
        given["stage1_overrides"] = parse_key_values(args.stage1_arg, "--stage1-arg")
    if args.phase2_arg:
        given["phase2_overrides"] = parse_key_values(args.phase2_arg, "--phase2-arg")
    cfg = Stage1BenchConfig(**given)
    report = run_stage1_benchmark(cfg, command=shlex.join(["muse", *sys.argv[1:]]))
    print(format_markdown(report))
    return 1 if args.require_pass and not report["all_pass"] else 0


def run_speed(args: argparse.Namespace) -> int:
    import shlex
    import sys

    stage1_only = [f"--{k.replace('_', '-')}" for k in STAGE1_ONLY if getattr(args, k, None) not in (None, [])]
    if stage1_only:
        raise ValueError(f"{', '.join(stage1_only)}: options of `muse bench stage1`, not of `muse bench speed`")

    from benchmarks.speed import SpeedConfig, format_markdown, run_speed_benchmark

    given = {k: getattr(args, k) for k in ("preset", "batch_size", "seq_len", "device", "seed", "out",
                                           "compile_backend", "cpu_repeats", "amp") if getattr(args, k) is not None}
    if args.no_ops:
        given["ops"] = False
    overrides = {k: getattr(args, k) for k in ("vocab_size", "d_model", "n_layers") if getattr(args, k) is not None}
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    if args.stage1_arg:
        from muse.cli.train import parse_key_values

        given["stage1_overrides"] = parse_key_values(args.stage1_arg, "--stage1-arg")
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    if args.compile is False:
        variants = [v for v in variants if not v.startswith("compiled")]
    cfg = SpeedConfig(**given, model_overrides=overrides, variants=tuple(variants),
                      models=tuple(args.models.split(",")) if args.models else MODEL_ROWS)
    report = run_speed_benchmark(cfg, command=shlex.join(["muse", *sys.argv[1:]]))
    print(format_markdown(report))
    print(f"report: {report['out']}/report.json, report.md")
    return 0
