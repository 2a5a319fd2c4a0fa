"""``muse bench stage1``: train Stage 1 and Phase 2 identically and judge the Stage 1 criteria."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark runners (stage1: the Stage 1 completion criteria vs Phase 2)",
        description="Benchmark runners. 'stage1' trains Stage 1 and Phase 2 under identical settings, "
        "measures perplexity, peak memory, throughput, NaN rate, gradient norms and the planar layout, "
        "and reports each criterion as pass / fail / not_measured. Options left out take the defaults of "
        "benchmarks.stage1.Stage1BenchConfig (CPU quick start: tiny preset, 131,072 tokens per model).",
        epilog="examples:\n"
        "  muse bench stage1 --preset tiny --train-split valid          # CPU: memory is not measured\n"
        "  muse bench stage1 --preset seed --device cuda --tokens 5000000 "
        "--tokens-npy train.npy --eval-tokens-npy test.npy\n"
        "  muse bench stage1 --preset seed --stage1-arg mixer=recurrence --stage1-arg ffn=complex "
        "--stage1-arg d_ffn=1024   # the mix preset's Stage 1 vs Phase 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("which", choices=["stage1"], help="which benchmark")
    g = p.add_argument_group("models and training (identical for both models)")
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
    g.add_argument("--seed", type=int)
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
    m = p.add_argument_group("measurements")
    m.add_argument("--memory-batch", type=int)
    m.add_argument("--memory-seq", type=int)
    m.add_argument("--throughput-batch", type=int)
    m.add_argument("--throughput-steps", type=int)
    m.add_argument("--trials", type=int)
    m.add_argument("--trial-batch", type=int)
    m.add_argument("--trial-seq", type=int)
    p.add_argument("--out", help="output directory (default runs/bench-stage1-<preset>-<time>)")
    p.add_argument("--progress", action="store_true", default=None, help="show tqdm progress bars")
    p.add_argument("--require-pass", action="store_true", help="exit 1 unless every criterion passed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import shlex
    import sys

    from benchmarks.stage1 import Stage1BenchConfig, format_markdown, run_stage1_benchmark
    from muse.cli.train import parse_key_values

    fields = {f.name for f in dataclasses.fields(Stage1BenchConfig)}

    given = {k: v for k, v in vars(args).items() if v is not None and k in fields}
    if args.dropout is not None:
        given["model_overrides"] = {"dropout": args.dropout}
    if args.stage1_arg:
        given["stage1_overrides"] = parse_key_values(args.stage1_arg, "--stage1-arg")
    cfg = Stage1BenchConfig(**given)
    report = run_stage1_benchmark(cfg, command=shlex.join(["muse", *sys.argv[1:]]))
    print(format_markdown(report))
    return 1 if args.require_pass and not report["all_pass"] else 0
