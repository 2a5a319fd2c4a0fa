"""``muse bench stage1``: train Stage 1 and Phase 2 identically and judge the Stage 1 criteria."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark runners (stage1: the Stage 1 completion criteria vs Phase 2)",
        description="Benchmark runners. 'stage1' trains Stage 1 and Phase 2 under identical settings, "
        "measures perplexity, peak memory, throughput, NaN rate, gradient norms and the planar layout, "
        "and reports each criterion as pass / fail / not_measured.",
        epilog="examples:\n"
        "  muse bench stage1 --preset tiny --train-split valid          # CPU: memory is not measured\n"
        "  muse bench stage1 --preset seed --device cuda --tokens 5000000 "
        "--tokens-npy train.npy --eval-tokens-npy test.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("which", choices=["stage1"], help="which benchmark")
    g = p.add_argument_group("models and training (identical for both models)")
    g.add_argument("--preset", default="tiny")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--tokens", type=int, default=262_144, help="training tokens per model")
    g.add_argument("--max-steps", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--seq-len", type=int, default=None)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--min-lr", type=float, default=1e-4)
    g.add_argument("--warmup", type=int, default=20)
    g.add_argument("--dropout", type=float, default=None, help="override both models' dropout")
    g.add_argument("--seed", type=int, default=1337)
    d = p.add_argument_group("data")
    d.add_argument("--train-split", default="train", choices=["train", "valid"])
    d.add_argument("--eval-split", default="test", choices=["valid", "test"])
    d.add_argument("--data-dir")
    d.add_argument("--tokenizer-dir")
    d.add_argument("--cache-dir")
    d.add_argument("--tokens-npy", help="pre-tokenised uint16 training tokens (.npy)")
    d.add_argument("--eval-tokens-npy", help="pre-tokenised uint16 eval tokens (.npy)")
    d.add_argument("--offline", action="store_true", help="never contact the Hugging Face hub")
    d.add_argument("--final-eval-tokens", type=int, default=None, help="bound the final eval (default: whole split)")
    m = p.add_argument_group("measurements")
    m.add_argument("--memory-batch", type=int, default=2)
    m.add_argument("--memory-seq", type=int, default=None)
    m.add_argument("--throughput-batch", type=int, default=4)
    m.add_argument("--throughput-steps", type=int, default=10)
    m.add_argument("--trials", type=int, default=100)
    m.add_argument("--trial-batch", type=int, default=2)
    m.add_argument("--trial-seq", type=int, default=128)
    p.add_argument("--out", help="output directory (default runs/bench-stage1-<preset>-<time>)")
    p.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    p.add_argument("--require-pass", action="store_true", help="exit 1 unless every criterion passed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from benchmarks.stage1 import Stage1BenchConfig, format_markdown, run_stage1_benchmark

    overrides = {} if args.dropout is None else {"dropout": args.dropout}
    cfg = Stage1BenchConfig(
        preset=args.preset, device=args.device, tokens=args.tokens, max_steps=args.max_steps,
        batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, min_lr=args.min_lr, warmup=args.warmup,
        train_split=args.train_split, eval_split=args.eval_split, data_dir=args.data_dir,
        tokenizer_dir=args.tokenizer_dir, cache_dir=args.cache_dir, tokens_npy=args.tokens_npy,
        eval_tokens_npy=args.eval_tokens_npy, offline=args.offline, final_eval_tokens=args.final_eval_tokens,
        memory_batch=args.memory_batch, memory_seq=args.memory_seq, throughput_batch=args.throughput_batch,
        throughput_steps=args.throughput_steps, trials=args.trials, trial_batch=args.trial_batch,
        trial_seq=args.trial_seq, seed=args.seed, out=args.out, progress=args.progress,
        model_overrides=overrides,
    )
    report = run_stage1_benchmark(cfg, command=shlex.join(["muse", *sys.argv[1:]]))
    print(format_markdown(report))
    return 1 if args.require_pass and not report["all_pass"] else 0
