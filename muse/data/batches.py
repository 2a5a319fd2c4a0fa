"""Deterministic batching of a token array: shuffled training blocks and exhaustive eval windows.

Training: block ``i`` is ``tokens[i*seq_len : i*seq_len + seq_len + 1]`` (inputs are its first
``seq_len`` tokens, targets its last ``seq_len``), so block inputs never overlap and every token
after the first is a target of exactly one block. Evaluation: every token except the first is
scored exactly once, optionally with sliding-window context.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from muse._checks import check_int, check_type

IGNORE_INDEX = -100
Batch = tuple[torch.Tensor, torch.Tensor]


def as_token_array(name: str, tokens: object, min_len: int) -> np.ndarray:
    """A 1-D integer numpy view of ``tokens`` (numpy array or tensor) with at least ``min_len`` ids."""
    if isinstance(tokens, torch.Tensor):
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
        tokens = tokens.detach().cpu().numpy()
    check_type(name, tokens, np.ndarray, "a 1-D numpy array or torch.Tensor of token ids")
    if tokens.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids, got dtype {tokens.dtype}")
    if tokens.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tokens.shape}")
    if tokens.shape[0] < min_len:
        raise ValueError(f"{name} has {tokens.shape[0]} tokens, fewer than the {min_len} needed")
    if tokens.dtype.kind == "i" and int(tokens.min()) < 0:
        raise ValueError(f"{name} contains negative token ids")
    return tokens


def _long(array: np.ndarray) -> torch.Tensor:
    """A fresh int64 tensor (always a copy, so writing -100 never touches the caller's array)."""
    return torch.from_numpy(array.astype(np.int64, order="C", copy=True))


class TrainBlocks:
    """An endless iterator of ``(inputs, targets)`` LongTensors of shape (batch_size, seq_len).

    Each epoch draws a permutation of the blocks seeded by ``(seed, epoch)`` and walks it in
    global batches of ``batch_size * world_size`` blocks; rank ``r`` takes rows
    ``r*batch_size:(r+1)*batch_size``. The ``n_blocks % global batch`` blocks at the end of a
    permutation are skipped that epoch (a different set each epoch), so all ranks take the same
    number of equal-shaped steps. ``state_dict()`` / ``load_state_dict()`` resume exactly.
    """

    def __init__(
        self,
        tokens: object,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.seq_len = check_int("seq_len", seq_len, min_value=1)
        self.batch_size = check_int("batch_size", batch_size, min_value=1)
        self.seed = check_int("seed", seed, min_value=0)
        self.world_size = check_int("world_size", world_size, min_value=1)
        self.rank = check_int("rank", rank)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        self.tokens = as_token_array("tokens", tokens, self.seq_len + 1)
        self.n_blocks = (self.tokens.shape[0] - 1) // self.seq_len
        self.global_batch = self.batch_size * self.world_size
        if self.n_blocks < self.global_batch:
            raise ValueError(
                f"tokens has {self.tokens.shape[0]} tokens = {self.n_blocks} blocks of seq_len="
                f"{self.seq_len}, fewer than one global batch of batch_size*world_size="
                f"{self.global_batch} blocks"
            )
        self.batches_per_epoch = self.n_blocks // self.global_batch
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, np.zeros(0, dtype=np.int64)
        self._offsets = np.arange(self.seq_len + 1)

    def permutation(self, epoch: int) -> np.ndarray:
        """The block order of ``epoch`` (a permutation of ``range(n_blocks)``)."""
        check_int("epoch", epoch, min_value=0)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
            self._perm_epoch = epoch
        return self._perm

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        lo = self.position + self.rank * self.batch_size
        blocks = self.permutation(self.epoch)[lo : lo + self.batch_size]
        self.position += self.global_batch
        self._roll_over()
        chunk = self.tokens[(blocks * self.seq_len)[:, None] + self._offsets]
        return _long(chunk[:, :-1]), _long(chunk[:, 1:])

    def _roll_over(self) -> None:
        if self.position + self.global_batch > self.n_blocks:
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """Where the next batch comes from: epoch, block position in its permutation, seed."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "seq_len": self.seq_len, "n_blocks": self.n_blocks}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``; the token array and seq_len must be those it was saved with."""
        check_type("state", state, dict, "a dict from state_dict()")
        missing = {"epoch", "position", "seed", "seq_len", "n_blocks"} - state.keys()
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        for name in ("seq_len", "n_blocks"):
            if check_int(f"state[{name!r}]", state[name]) != getattr(self, name):
                raise ValueError(
                    f"state[{name!r}]={state[name]} but this TrainBlocks has {name}="
                    f"{getattr(self, name)}; it was saved for other data or another seq_len"
                )
        position = check_int("state['position']", state["position"], min_value=0)
        if position > self.n_blocks:
            raise ValueError(f"state['position'] must be <= n_blocks={self.n_blocks}, got {position}")
        self.epoch = check_int("state['epoch']", state["epoch"], min_value=0)
        self.seed = check_int("state['seed']", state["seed"], min_value=0)
        self.position, self._perm_epoch = position, -1
        self._roll_over()


def eval_windows(
    tokens: object, seq_len: int, stride: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Windows ``(inputs, targets, n_scored)`` (LongTensors of shape (1, L), L <= seq_len).

    Window ``k`` covers inputs ``tokens[k*stride : k*stride + L]`` and targets shifted by one.
    With ``stride == seq_len`` (default) windows do not overlap and the last may be shorter. With
    ``stride < seq_len`` each window keeps up to ``seq_len`` tokens of context and scores only
    the targets no earlier window scored (the last ``stride`` or fewer); the others are set to
    ``IGNORE_INDEX``. Every token but the first is scored exactly once, as in the Hugging Face
    perplexity guide, except that a window of L inputs scores L targets (it reads L + 1 tokens).
    """
    seq_len = check_int("seq_len", seq_len, min_value=1)
    stride = seq_len if stride is None else check_int("stride", stride, min_value=1)
    if stride > seq_len:
        raise ValueError(f"stride must be <= seq_len={seq_len}, got {stride}")
    array = as_token_array("tokens", tokens, 2)
    return _windows(array, seq_len, stride)


def _windows(array: np.ndarray, seq_len: int, stride: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    last, scored_end, begin = array.shape[0] - 1, 0, 0
    while scored_end < last:
        end = min(begin + seq_len, last)
        inputs, targets = _long(array[begin:end]), _long(array[begin + 1 : end + 1])
        first_new = max(begin, scored_end)
        targets[: first_new - begin] = IGNORE_INDEX
        yield inputs[None], targets[None], end - first_new
        scored_end, begin = end, begin + stride


def batched(
    windows: Iterable[tuple[torch.Tensor, torch.Tensor, int]], batch_size: int, pad_id: int = 0,
    width: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Stack up to ``batch_size`` windows into (b, L_max), right-padding inputs with ``pad_id``
    and targets with ``IGNORE_INDEX``; right padding cannot change a causal model's scores.

    With ``width`` every batch is (batch_size, width): the last batch gets rows of padding and every
    window is padded to ``width``, so a compiled model sees one shape (a new shape recompiles it: the
    tail of an eval split cost a seed-size model 11-20 s, docs/results.md forty-third session)."""
    batch_size = check_int("batch_size", batch_size, min_value=1)
    pad_id = check_int("pad_id", pad_id, min_value=0)
    if width is not None:
        check_int("width", width, min_value=1)
    return _batches(windows, batch_size, pad_id, width)


def _batches(
    windows: Iterable[tuple[torch.Tensor, torch.Tensor, int]], batch_size: int, pad_id: int, width: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    group: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    rows = batch_size if width is not None else None
    for window in windows:
        group.append(window)
        if len(group) == batch_size:
            yield _stack(group, pad_id, rows, width)
            group = []
    if group:
        yield _stack(group, pad_id, rows, width)


def _stack(group: list[tuple[torch.Tensor, torch.Tensor, int]], pad_id: int, rows: int | None = None,
           width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    longest = max(x.shape[1] for x, _, _ in group)
    if width is not None and longest > width:
        raise ValueError(f"width must be >= every window's length, got {width} for a window of {longest}")
    width = longest if width is None else width
    rows = len(group) if rows is None else rows
    inputs = torch.full((rows, width), pad_id, dtype=torch.long)
    targets = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
    for row, (x, y, _) in enumerate(group):
        inputs[row, : x.shape[1]] = x[0]
        targets[row, : y.shape[1]] = y[0]
    return inputs, targets, sum(n for _, _, n in group)
