"""``muse train``: train a registered model on WikiText-2 (or pre-tokenised .npy files)."""

from __future__ import annotations

import argparse
import json
import sys

from muse.cli._compile import add_compile_flag

EPILOG = """examples:
  muse train --model stage1 --preset tiny --train-split valid --max-steps 200    # CPU, offline data
  muse train --model phase2 --preset seed --tokens 20000000 --batch-size 8 --amp bf16
  torchrun --nproc_per_node 2 -m muse train --model stage1 --preset seed --batch-size 4 --grad-accum 2 \\
      --tokens-npy valid.npy --eval-tokens-npy test.npy --train-split valid
  muse train --resume runs/stage1-tiny-20260101-120000/last.safetensors --model stage1 --preset tiny ...

Global batch = batch-size x grad-accum x world size sequences of seq-len tokens.
Training on the validation split is recorded (with a warning) in every log and result.
"""


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (AdamW, warmup+cosine, checkpoints, DDP)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="stage1", help="registered model name (stage1, phase2, ...)")
    g.add_argument("--preset", default="tiny", help="model preset: tiny, small or seed (default tiny)")
    g.add_argument("--dropout", type=float, help="override the model's dropout")
    g.add_argument("--vocab-size", type=int, help="override vocab_size (synthetic data only)")
    g.add_argument("--d-model", type=int, help="override d_model")
    g.add_argument("--n-layers", type=int, help="override n_layers")
    g.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other config field (VALUE parsed as JSON, else a string); repeatable")
    g = p.add_argument_group("optimisation")
    g.add_argument("--seq-len", type=int, help="default: the preset's max_seq_len")
    g.add_argument("--batch-size", type=int, default=8, help="sequences per rank per micro-batch (default 8)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    g.add_argument("--lr", type=float, default=6e-4, help="peak learning rate (default 6e-4)")
    g.add_argument("--min-lr", type=float, default=6e-5, help="cosine floor (default 6e-5)")
    g.add_argument("--warmup", type=int, default=100, help="linear warmup steps (default 100)")
    g.add_argument("--optimizer", choices=["adamw", "muon"], default="adamw",
                   help="muon: Muon (complex polar factor for planar weights) on the hidden linear weights, AdamW on "
                   "the rest, the same lr and weight decay (default adamw)")
    g.add_argument("--muon-rms", type=float, default=0.2,
                   help="with --optimizer muon: the step's RMS per weight at unit lr (default 0.2, AdamW's typical update)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="on linear weights only (default 0.1)")
    g.add_argument("--decay-embeddings", action="store_true",
                   help="also apply the weight decay to the embedding tables (nanoGPT's rule)")
    g.add_argument("--label-smoothing", type=float, default=0.0, metavar="EPS",
                   help="the training loss's label smoothing in [0, 1) (default 0; evals score the plain loss)")
    g.add_argument("--clip", type=float, default=1.0, help="global grad-norm clip, 0 = off (default 1.0)")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--tokens", type=int, help="token budget, converted to steps")
    budget.add_argument("--max-steps", type=int, help="number of optimizer steps")
    g.add_argument("--stop-after", type=int, help="stop (and checkpoint) after this step, schedule unchanged")
    g.add_argument("--amp", choices=["bf16", "fp16"], help="autocast for fp32 models on CUDA")
    g.add_argument("--init-scale", type=float, default=2.0**16, help="Stage 1 initial loss scale")
    g.add_argument("--max-skip-fraction", type=float, default=0.05,
                   help="fail when more than 10 + this fraction of steps are skipped (default 0.05)")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-every", type=int, default=200, help="steps between evals, 0 = off (default 200)")
    g.add_argument("--eval-tokens", type=int, default=65536, help="tokens per periodic eval, 0 = all")
    g.add_argument("--final-eval-tokens", type=int, default=0, help="tokens of the final eval, 0 = all (default)")
    g.add_argument("--eval-batch-size", type=int, help="default: --batch-size")
    g.add_argument("--eval-stride", type=int, help="sliding-window stride of the final eval")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--ckpt-every", type=int, help="steps between checkpoints (default: --eval-every)")
    g.add_argument("--save-best", action="store_true", help="also keep best.safetensors")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar (also off when not a TTY)")
    g = p.add_argument_group("data")
    g.add_argument("--train-split", default="train", choices=["train", "valid", "test"])
    g.add_argument("--eval-split", default="test", choices=["train", "valid", "test"])
    g.add_argument("--data-dir", help="directory of wiki.{train,valid,test}.raw ($MUSE_DATA_DIR)")
    g.add_argument("--tokenizer-dir", help="GPT-2 tokenizer files ($MUSE_TOKENIZER_DIR)")
    g.add_argument("--cache-dir", help="token cache ($MUSE_CACHE_DIR)")
    g.add_argument("--tokens-npy", help="pre-tokenised uint16 .npy to train on (its split is --train-split)")
    g.add_argument("--eval-tokens-npy", help="pre-tokenised uint16 .npy to evaluate on")
    g.add_argument("--offline", action="store_true", help="never contact the Hugging Face hub")
    g = p.add_argument_group("run")
    g.add_argument("--out", help="output directory (default runs/<model>-<preset>-<timestamp>)")
    g.add_argument("--resume", help="checkpoint to continue from (same model and settings)")
    g.add_argument("--seed", type=int, default=1337)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.add_argument("--dist-backend", default="auto", choices=["auto", "nccl", "gloo"],
                   help="under torchrun: auto = NCCL on CUDA, gloo on CPU; gloo on CUDA lets ranks share a GPU")
    add_compile_flag(g)
    g.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune"], default=None,
                   help="the compiled step's torch.compile mode (default: reduce-overhead in one CUDA process, else "
                   "default); reduce-overhead: the step replays CUDA graphs (under DDP the pieces between its "
                   "all-reduces); max-autotune: CUDA graphs and inductor's GEMM autotuning (minutes of compile "
                   "time); default: torch's default")
    g.add_argument("--compile-memory-budget", type=float, default=None, metavar="FRACTION",
                   help="the compiler's activation memory budget in (0, 1] (torch._functorch.config."
                   "activation_memory_budget; torch's default 1.0): lower recomputes more in backward and keeps less")
    g.add_argument("--keep-logits", action="store_true",
                   help="the loss keeps its vocabulary chunks' logits for backward instead of recomputing them: "
                   "one head GEMM fewer a chunk, the memory of the full (tokens x vocab) logits in 16 bits")
    p.set_defaults(func=run)


def parse_key_values(items: list[str], flag: str = "--model-arg") -> dict:
    """``KEY=VALUE`` strings -> dict; VALUE parsed as JSON, else kept as a string."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} must look like KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_model_args(args: argparse.Namespace) -> dict:
    """Model config overrides from the dedicated flags and ``--model-arg KEY=VALUE``."""
    out = parse_key_values(args.model_arg)
    for key in ("dropout", "vocab_size", "d_model", "n_layers"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


def config_from_args(args: argparse.Namespace):
    from muse.train import TrainConfig

    return TrainConfig(
        model=args.model, preset=args.preset, model_overrides=parse_model_args(args),
        seq_len=args.seq_len, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        min_lr=args.min_lr, warmup=args.warmup, optimizer=args.optimizer, muon_rms=args.muon_rms, weight_decay=args.weight_decay,
        decay_embeddings=args.decay_embeddings, label_smoothing=args.label_smoothing, clip=args.clip,
        tokens=args.tokens, max_steps=args.max_steps, stop_after=args.stop_after,
        eval_every=args.eval_every, eval_tokens=args.eval_tokens or None,
        final_eval_tokens=args.final_eval_tokens or None, eval_batch_size=args.eval_batch_size,
        eval_stride=args.eval_stride, log_every=args.log_every, ckpt_every=args.ckpt_every,
        save_best=args.save_best, train_split=args.train_split, eval_split=args.eval_split,
        data_dir=args.data_dir, tokenizer_dir=args.tokenizer_dir, cache_dir=args.cache_dir,
        tokens_npy=args.tokens_npy, eval_tokens_npy=args.eval_tokens_npy, offline=args.offline,
        out=args.out, resume=args.resume, seed=args.seed, device=args.device, amp=args.amp,
        progress=not args.no_progress, init_scale=args.init_scale, max_skip_fraction=args.max_skip_fraction,
        compile=args.compile, compile_mode=args.compile_mode, keep_logits=args.keep_logits,
        dist_backend=args.dist_backend, compile_memory_budget=args.compile_memory_budget,
    )


def run(args: argparse.Namespace) -> int:
    from muse.train import TrainingError, train

    try:
        cfg = config_from_args(args)
        if cfg.resume is not None:
            from pathlib import Path

            if not Path(cfg.resume).is_file():
                raise FileNotFoundError(f"--resume {cfg.resume}: no such checkpoint file")
        results = train(cfg)
    except TrainingError as exc:
        print(f"muse train: error: training failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0 if results.get("status", "completed") in ("completed", "stopped") else 1
