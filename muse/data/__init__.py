"""Data pipeline: WikiText-2 raw text, the GPT-2 tokenizer, a token cache, and batching.

See docs/data.md for sources, the text convention, checksums, the cache and batch semantics.
"""

from muse.data.batches import IGNORE_INDEX, TrainBlocks, batched, eval_windows
from muse.data.cache import (
    CONVENTION,
    TokenSplit,
    cache_key,
    load_token_file,
    load_tokens,
    save_token_file,
    tokens_sha256,
)
from muse.data.sources import (
    DataNotFoundError,
    file_sha256,
    hub_unavailable_reason,
    resolve_cache_dir,
    shared_data_dir,
    verify_sha256,
)
from muse.data.tokenizer import (
    EOT_ID,
    VOCAB_SIZE,
    GPT2Tokenizer,
    load_tokenizer,
    resolve_tokenizer_dir,
)
from muse.data.wikitext import (
    SPLITS,
    SplitText,
    check_split,
    load_split_text,
    resolve_data_dir,
    resolve_train_split,
    rows_from_raw,
)

__all__ = [
    "CONVENTION",
    "EOT_ID",
    "IGNORE_INDEX",
    "SPLITS",
    "VOCAB_SIZE",
    "DataNotFoundError",
    "GPT2Tokenizer",
    "SplitText",
    "TokenSplit",
    "TrainBlocks",
    "batched",
    "cache_key",
    "check_split",
    "eval_windows",
    "file_sha256",
    "hub_unavailable_reason",
    "load_split_text",
    "load_token_file",
    "load_tokenizer",
    "load_tokens",
    "resolve_cache_dir",
    "resolve_data_dir",
    "resolve_tokenizer_dir",
    "resolve_train_split",
    "rows_from_raw",
    "save_token_file",
    "shared_data_dir",
    "tokens_sha256",
    "verify_sha256",
]
