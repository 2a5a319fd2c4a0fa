"""``muse eval``: loss and perplexity of a training checkpoint on a WikiText-2 split or a .npy.

On a split it also reports bits per byte and, when the whole split is scored, the word-level
perplexity (WikiText's word-level token count: test 245,569), which do not depend on the
tokenizer; a ``.npy`` holds ids without their text, so those are null there."""

from __future__ import annotations

import argparse

from muse.cli._compile import add_compile_flag

EPILOG = """examples:
  muse eval runs/stage1-tiny-20260101-120000/last.safetensors                 # whole test split
  muse eval last.safetensors --tokens-npy test.npy --stride 512 --json eval.json
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a training checkpoint (loss, perplexity)",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by muse train")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--tokens-npy", help="pre-tokenised uint16 .npy instead of --split")
    p.add_argument("--seq-len", type=int, help="window length (default: the run's seq_len)")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: seq-len, no overlap)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-tokens", type=int, help="score only the first N tokens")
    p.add_argument("--data-dir")
    p.add_argument("--tokenizer-dir")
    p.add_argument("--cache-dir")
    p.add_argument("--offline", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    add_compile_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    import sys
    import time

    import torch

    from muse._io import check_output_file, write_report_json
    from muse.data import load_token_file, load_tokens
    from muse.models.compile import compile_model, resolve_compile, timed
    from muse.train.checkpoint import model_from_checkpoint
    from muse.train.distributed import resolve_device
    from muse.train.evaluate import evaluate

    if args.json:
        check_output_file("--json", args.json)
    device = resolve_device(args.device)
    model, ck = model_from_checkpoint(args.checkpoint, device)
    max_len = model.config.max_seq_len
    if args.seq_len is not None and not 1 <= args.seq_len <= max_len:
        raise ValueError(f"--seq-len {args.seq_len} must be in [1, {max_len}] (the model's max_seq_len)")
    if args.tokens_npy:
        tokens, source = load_token_file(args.tokens_npy), args.tokens_npy
        units = {}  # ids alone: no text, so no bytes or words
    else:
        split = load_tokens(args.split, data_dir=args.data_dir, tokenizer_dir=args.tokenizer_dir,
                            cache_dir=args.cache_dir, allow_hub=not args.offline)
        tokens, source = split.tokens, split.source
        units = {"token_bytes": split.token_bytes, "word_tokens": split.word_tokens}
    seq_len = args.seq_len or ck.train_config.get("seq_len") or max_len
    compiled = resolve_compile(args.compile, device)
    net, compile_s = model, None
    if compiled:  # compile on one batch of the eval shape first, so "seconds" is run time only
        net = compile_model(model)
        warm = torch.zeros(args.batch_size, seq_len, dtype=torch.long, device=device)
        model.eval()
        with torch.no_grad():
            _, compile_s = timed(net, warm, device=device)
    t0 = time.perf_counter()
    res = evaluate(net, tokens, seq_len, args.batch_size, stride=args.stride, max_tokens=args.max_tokens, **units)
    finite = math.isfinite(res["loss"])
    out = {"status": "ok" if finite else "non_finite_loss", "checkpoint": str(args.checkpoint),
           "model": ck.model_name, "step": ck.counters.get("step"),
           "train_split": ck.train_config.get("train_split_used"), "eval_source": str(source),
           "seq_len": seq_len, "stride": args.stride or seq_len, **res, "seconds": time.perf_counter() - t0,
           "compiled": compiled, "compile_s": compile_s}
    for key, value in out.items():
        print(f"{key:<14}{value}")
    if args.json:
        write_report_json(args.json, out)
    if not finite:
        print(f"muse eval: error: the eval loss is {res['loss']} (non-finite): the checkpoint's model "
              "diverged or overflows on this data", file=sys.stderr)
        return 1
    return 0
