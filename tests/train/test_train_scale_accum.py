"""Issue 13 items 24-25: the loss scale is a power of two; accumulated gradients are summed in fp32."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

from muse.train.optim import FullPrecisionOptimizer, MixedPrecisionOptimizer
from muse.train.scaler import DynamicLossScaler


@pytest.mark.parametrize("kw", [dict(init_scale=1000.0), dict(init_scale=3.0), dict(growth_factor=3.0),
                                dict(backoff_factor=0.3)])
def test_item24_scaler_factors_must_be_powers_of_two(kw):
    with pytest.raises(ValueError, match="must be a power of two"):
        DynamicLossScaler(**kw)


def test_item24_scaler_state_must_hold_a_power_of_two():
    s = DynamicLossScaler(init_scale=2.0**-3, growth_factor=4.0, backoff_factor=0.25)
    state = s.state_dict()
    with pytest.raises(ValueError, match="scale must be a power of two"):
        DynamicLossScaler().load_state_dict({**state, "scale": 1000.0})


def test_item25_micro_batch_gradients_are_summed_in_fp32():
    """Micro-batch gradients 2048 and 1 (times scale 1): fp16 sums them to 2048 (its spacing at
    2048 is 2); fp32 keeps 2049. The step's pre-clip grad norm shows which sum was taken."""
    w = nn.Parameter(torch.zeros((), dtype=torch.float16))
    opt = MixedPrecisionOptimizer([("w", w)], lr=1e-3, weight_decay=0.0,
                                  loss_scaler=DynamicLossScaler(init_scale=1.0))
    opt.zero_grad()
    opt.backward(w.float() * 2048.0)
    opt.backward(w.float() * 1.0)
    res = opt.step(max_norm=None)
    assert not res.skipped and res.grad_norm == 2049.0
    opt.zero_grad()  # a fresh step starts from zero
    opt.backward(w.float() * 3.0)
    assert opt.step().grad_norm == 3.0


def test_item25_a_plain_backward_is_still_picked_up():
    w = nn.Parameter(torch.ones(2, dtype=torch.float16))
    opt = MixedPrecisionOptimizer([("w", w)], lr=1e-3, weight_decay=0.0,
                                  loss_scaler=DynamicLossScaler(init_scale=4.0))
    opt.zero_grad()
    (w.float().sum() * 4.0).backward()  # the caller scaled and ran backward itself
    assert opt.step().grad_norm == pytest.approx(2**0.5)


def test_item25_ddp_grad_accumulation_matches_one_rank(tmp_path):
    """2 ranks x batch 2 x grad-accum 2 against 1 rank x batch 4 x grad-accum 2 (same blocks per
    micro-batch): under no_sync only the last micro-batch is averaged by DDP, so the optimizer
    averages the fp32 master gradients itself. Bound as in tests/test_train_ddp.py (fp16 rounding
    of the gradients only)."""
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    from muse.cli import main
    from muse.train.synthetic import repeated_sequence

    train, evals = tmp_path / "train.npy", tmp_path / "eval.npy"
    np.save(train, repeated_sequence(64, 48, 8192))
    np.save(evals, repeated_sequence(64, 48, 1024, seed=1))
    common = ["train", "--vocab-size", "64", "--d-model", "16", "--n-layers", "1", "--seq-len", "32",
              "--lr", "1e-2", "--min-lr", "1e-3", "--warmup", "2", "--max-steps", "6", "--eval-every", "0",
              "--final-eval-tokens", "256", "--log-every", "1", "--device", "cpu", "--no-progress",
              "--dropout", "0", "--grad-accum", "2", "--tokens-npy", str(train), "--eval-tokens-npy", str(evals)]
    assert main([*common, "--batch-size", "4", "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           "2", "-m", "muse", *common, "--batch-size", "2", "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def losses(out):
        return [json.loads(line)["loss"] for line in open(out / "log.jsonl") if '"train"' in line]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=5e-4)


class _Returns(torch.autograd.Function):
    """Identity whose backward returns a fresh tensor the test can watch (through a weak reference, which leaves
    autograd free to take it as ``.grad``, as it takes a compiled backward's output)."""

    produced: list = []

    @staticmethod
    def forward(ctx, w):
        return w.clone()

    @staticmethod
    def backward(ctx, g):
        out = g.clone()
        _Returns.produced.append(weakref.ref(out))
        return out


@pytest.mark.parametrize("kind", ["mixed-fp16", "mixed-fp32", "full"])
def test_accumulation_lets_go_of_each_backwards_gradients(kind):
    """Gradient accumulation keeps no tensor a backward returned past that backward: under CUDA graphs such a
    tensor lives in the graph's memory, which the next micro-batch's forward replay overwrites (until 2026-12-07
    the fp16 gradients stayed in ``.grad`` until the next backward began, an fp32 parameter's master gradient was
    its ``.grad`` itself, and the full-precision optimizer let autograd take the first one as ``.grad``).  The
    step still sums every micro-batch."""
    dtype = torch.float16 if kind == "mixed-fp16" else torch.float32
    w = nn.Parameter(torch.ones(3, dtype=dtype))
    if kind == "full":
        opt = FullPrecisionOptimizer([("w", w)], lr=1e-3, weight_decay=0.0)
    else:
        opt = MixedPrecisionOptimizer([("w", w)], lr=1e-3, weight_decay=0.0,
                                      loss_scaler=DynamicLossScaler(init_scale=1.0))
    opt.zero_grad(accumulate=True)
    _Returns.produced.clear()
    for k in (2.0, 5.0):
        opt.backward((_Returns.apply(w).float() * k).sum())
        assert [ref() for ref in _Returns.produced] == [None] * len(_Returns.produced)
    assert len(_Returns.produced) == 2
    assert opt.step(max_norm=None).grad_norm == pytest.approx(7.0 * 3**0.5)


def test_zero_grad_accumulate_must_be_a_bool():
    w = nn.Parameter(torch.ones(3))
    with pytest.raises(TypeError, match="accumulate must be a bool, got int"):
        FullPrecisionOptimizer([("w", w)], lr=1e-3).zero_grad(accumulate=1)
