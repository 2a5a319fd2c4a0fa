"""TrainBlocks (shuffled epochs, exact resume, DDP sharding) and eval_windows (each target once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from muse.data import IGNORE_INDEX, TrainBlocks, batched, eval_windows


def _draw(blocks: TrainBlocks, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(blocks) for _ in range(k)]


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b, strict=True))


def test_blocks_shape_and_shift() -> None:
    blocks = TrainBlocks(np.arange(1000, dtype=np.uint16), seq_len=8, batch_size=4, seed=1)
    inputs, targets = next(blocks)
    assert inputs.shape == targets.shape == (4, 8) and inputs.dtype == targets.dtype == torch.long
    assert torch.equal(targets, inputs + 1) and bool((inputs[:, 0] % 8 == 0).all())
    assert blocks.n_blocks == 999 // 8 and blocks.batches_per_epoch == 999 // 8 // 4


def test_each_epoch_sees_every_block_once() -> None:
    blocks = TrainBlocks(torch.arange(12 * 5 + 1), seq_len=5, batch_size=4, seed=3)
    epochs = []
    for _ in range(3):
        starts = torch.cat([x[:, 0] for x, _ in _draw(blocks, 3)]) // 5
        epochs.append(starts.tolist())
        assert sorted(starts.tolist()) == list(range(12))
    assert epochs[0] != epochs[1] != epochs[2] and blocks.epoch == 3
    other = TrainBlocks(torch.arange(12 * 5 + 1), seq_len=5, batch_size=4, seed=4)
    assert (torch.cat([x[:, 0] for x, _ in _draw(other, 3)]) // 5).tolist() != epochs[0]


def test_remainder_blocks_are_skipped_per_epoch() -> None:
    blocks = TrainBlocks(np.arange(10 * 4 + 1), seq_len=4, batch_size=4)
    _draw(blocks, 2)
    assert blocks.state_dict()["epoch"] == 1 and blocks.state_dict()["position"] == 0


@pytest.mark.parametrize("k", [0, 1, 5, 7, 11])
def test_resume_gives_the_same_next_batches(k: int) -> None:
    tokens = np.arange(23 * 6 + 3)
    blocks = TrainBlocks(tokens, seq_len=6, batch_size=3, seed=9)
    _draw(blocks, k)
    state = blocks.state_dict()
    expected = _draw(blocks, 9)
    fresh = TrainBlocks(tokens, seq_len=6, batch_size=3, seed=0)
    fresh.load_state_dict(state)
    assert fresh.seed == 9 and _same(_draw(fresh, 9), expected)


def test_load_state_dict_rejects_foreign_state() -> None:
    blocks = TrainBlocks(np.arange(100), seq_len=4, batch_size=2)
    state = blocks.state_dict()
    with pytest.raises(ValueError, match="seq_len"):
        TrainBlocks(np.arange(100), seq_len=5, batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        blocks.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="position"):
        blocks.load_state_dict({**state, "position": 10_000})
    with pytest.raises(TypeError, match="state"):
        blocks.load_state_dict([("epoch", 0)])


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_partition_the_global_batch(world_size: int) -> None:
    tokens = np.arange(50 * 4 + 1)
    whole = TrainBlocks(tokens, seq_len=4, batch_size=2 * world_size, seed=5)
    ranks = [TrainBlocks(tokens, seq_len=4, batch_size=2, seed=5, rank=r, world_size=world_size)
             for r in range(world_size)]
    for _ in range(2 * whole.batches_per_epoch + 1):
        inputs, targets = next(whole)
        parts = [next(r) for r in ranks]
        assert torch.equal(torch.cat([x for x, _ in parts]), inputs)
        assert torch.equal(torch.cat([y for _, y in parts]), targets)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seq_len": 0}, ValueError, "seq_len"),
        ({"seq_len": 2.0}, TypeError, "seq_len"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"rank": 2, "world_size": 2}, ValueError, "rank"),
        ({"rank": -1, "world_size": 2}, ValueError, "rank"),
        ({"world_size": 0}, ValueError, "world_size"),
        ({"tokens": np.arange(8)}, ValueError, "tokens"),
        ({"tokens": np.arange(200), "batch_size": 100}, ValueError, "global batch"),
        ({"tokens": np.arange(100.0)}, TypeError, "tokens"),
        ({"tokens": torch.ones(100, dtype=torch.bool)}, TypeError, "tokens"),
        ({"tokens": list(range(100))}, TypeError, "tokens"),
        ({"tokens": np.arange(100).reshape(10, 10)}, ValueError, "tokens"),
        ({"tokens": np.arange(100) - 1}, ValueError, "negative"),
    ],
)
def test_train_blocks_bad_input(kwargs: dict, error: type, match: str) -> None:
    args = {"tokens": np.arange(100), "seq_len": 8, "batch_size": 2, **kwargs}
    with pytest.raises(error, match=match):
        TrainBlocks(**args)


def _scored_positions(n: int, seq_len: int, stride: int | None) -> list[int]:
    positions, total = [], 0
    for inputs, targets, n_scored in eval_windows(np.arange(n), seq_len, stride):
        assert inputs.shape == targets.shape and inputs.shape[0] == 1 and 1 <= inputs.shape[1] <= seq_len
        mask = targets[0] != IGNORE_INDEX
        assert torch.equal(targets[0][mask], inputs[0][mask] + 1)
        kept = targets[targets != IGNORE_INDEX]
        assert kept.numel() == n_scored >= 1
        positions += kept.tolist()
        total += n_scored
    assert total == n - 1
    return positions


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 80), st.integers(1, 24), st.data())
def test_every_target_scored_exactly_once(n: int, seq_len: int, data: st.DataObject) -> None:
    stride = data.draw(st.one_of(st.none(), st.integers(1, seq_len)))
    assert _scored_positions(n, seq_len, stride) == list(range(1, n))


def test_default_windows_do_not_overlap_and_keep_the_tail() -> None:
    windows = list(eval_windows(torch.arange(23), seq_len=5))
    assert [w[0].shape[1] for w in windows] == [5, 5, 5, 5, 2]
    assert torch.cat([w[0][0] for w in windows]).tolist() == list(range(22))


def test_sliding_windows_match_the_hf_guide() -> None:
    windows = list(eval_windows(np.arange(11), seq_len=4, stride=2))
    assert [w[0][0].tolist() for w in windows] == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert [w[1][0].tolist() for w in windows] == [
        [1, 2, 3, 4], [-100, -100, 5, 6], [-100, -100, 7, 8], [-100, -100, 9, 10]]
    assert [w[2] for w in windows] == [4, 2, 2, 2]


def test_eval_windows_do_not_modify_tokens() -> None:
    tokens = np.arange(50, dtype=np.int64)
    for _ in eval_windows(tokens, seq_len=8, stride=3):
        pass
    assert tokens.tolist() == list(range(50))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((np.arange(10), 0), ValueError, "seq_len"),
        ((np.arange(10), 4, 0), ValueError, "stride"),
        ((np.arange(10), 4, 5), ValueError, "stride"),
        ((np.arange(10), 4, 2.0), TypeError, "stride"),
        ((np.arange(1), 4), ValueError, "tokens"),
        ((np.ones(10, dtype=np.float32), 4), TypeError, "tokens"),
    ],
)
def test_eval_windows_bad_input(args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        eval_windows(*args)


def test_batched_pads_and_counts() -> None:
    windows = list(eval_windows(np.arange(23), seq_len=5))
    batches = list(batched(iter(windows), batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 5), (2, 5), (1, 2)]
    assert sum(b[2] for b in batches) == 22
    mixed = list(batched(windows[3:], batch_size=4))[0]
    assert mixed[0][1].tolist() == [20, 21, 0, 0, 0] and mixed[1][1].tolist() == [21, 22] + [IGNORE_INDEX] * 3
    with pytest.raises(ValueError, match="batch_size"):
        batched(windows, 0)


def test_batched_with_a_width_gives_every_batch_one_shape() -> None:
    """The eval tail padded to (batch_size, width) with ignored targets: a compiled model sees one shape."""
    windows = list(eval_windows(np.arange(23), seq_len=5))
    batches = list(batched(iter(windows), batch_size=2, width=5))
    assert [tuple(b[0].shape) for b in batches] == [(2, 5)] * 3 and [b[2] for b in batches] == [10, 10, 2]
    tail_inputs, tail_targets, _ = batches[-1]
    assert tail_inputs.tolist() == [[20, 21, 0, 0, 0], [0] * 5]
    assert tail_targets.tolist() == [[21, 22] + [IGNORE_INDEX] * 3, [IGNORE_INDEX] * 5]
    with pytest.raises(ValueError, match="width must be >= every window's length, got 4 for a window of 5"):
        list(batched(windows, 2, width=4))
    with pytest.raises(ValueError, match="width must be >= 1"):
        batched(windows, 2, width=0)
