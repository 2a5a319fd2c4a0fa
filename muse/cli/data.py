"""``muse data``: tokenise and cache WikiText-2 splits, or export one as a plain uint16 ``.npy``."""

from __future__ import annotations

import argparse
import sys

SPLIT_CHOICES = ("test", "valid", "train", "all")


def _add_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="directory with wiki.<split>.raw (else $MUSE_DATA_DIR, "
                        "../shared/data/wikitext-2-raw, then the hub)")
    parser.add_argument("--tokenizer-dir", help="directory with tokenizer.json or vocab.json + "
                        "merges.txt (else $MUSE_TOKENIZER_DIR, ../shared/data/gpt2-tokenizer, hub)")
    parser.add_argument("--cache-dir", help="token cache root (else $MUSE_CACHE_DIR, ~/.cache/muse)")
    parser.add_argument("--offline", action="store_true", help="never use the Hugging Face hub")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="prepare (tokenise + cache) or export WikiText-2 token arrays",
        description="Tokenise WikiText-2 raw with GPT-2 BPE, cache the tokens, or export them.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = actions.add_parser("prepare", help="tokenise and cache splits, print a summary")
    prepare.add_argument("--split", choices=SPLIT_CHOICES, default="all",
                         help="split to prepare; 'all' skips train with a note if unavailable")
    _add_sources(prepare)
    export = actions.add_parser("export", help="write one split's tokens as a plain uint16 .npy")
    export.add_argument("--split", choices=SPLIT_CHOICES[:3], required=True)
    export.add_argument("--out", required=True, help="output .npy path")
    _add_sources(export)
    parser.set_defaults(func=run)


def _summary(ts) -> str:
    state = "reused" if ts.cache_hit else "written"
    rows = [
        ("source", ts.source), ("sha256", f"{ts.sha256} {ts.sha256_status}"),
        ("rows", f"{ts.n_rows:,}"), ("chars", f"{ts.n_chars:,}"), ("tokens", f"{ts.n_tokens:,}"),
        ("words", f"{ts.word_tokens:,} (word-level tokens: whitespace words + one end of line per row)"),
        ("cache", f"{ts.cache_path} ({state})"),
        ("tokenizer", f"{ts.tokenizer_source} [{ts.tokenizer_status}]"),
    ]
    return f"split {ts.split}\n" + "\n".join(f"  {k:<10}{v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from muse.data import DataNotFoundError, load_tokenizer, load_tokens, save_token_file

    allow_hub = not args.offline
    try:
        tokenizer = load_tokenizer(args.tokenizer_dir, allow_hub=allow_hub)
        splits = ("test", "valid", "train") if args.split == "all" else (args.split,)
        for split in splits:
            try:
                ts = load_tokens(split, data_dir=args.data_dir, cache_dir=args.cache_dir,
                                 allow_hub=allow_hub, tokenizer=tokenizer)
            except DataNotFoundError as exc:
                if args.split != "all" or split != "train":
                    raise
                print(f"split train\n  skipped   {exc}")
                continue
            if args.data_command == "export":
                out = save_token_file(ts.tokens, args.out)
                print(f"wrote {out}: {ts.n_tokens:,} uint16 tokens of split {split} from {ts.source}")
            else:
                print(_summary(ts))
    except (DataNotFoundError, ValueError, TypeError, OSError) as exc:
        print(f"muse data {args.data_command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0
