"""DDP on CPU (gloo) through torchrun: 2 ranks x batch B against 1 rank x batch 2B, and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _helpers import requires_cuda
from safetensors.torch import load_file

from muse.cli import main
from muse.train import TrainConfig
from muse.train.distributed import resolve_backend
from muse.train.synthetic import repeated_sequence

# Per-step train loss, 2 ranks vs 1 rank: the ranks' fp16 gradients are averaged in fp32 and
# rounded once, the single rank rounds its own fp32-accumulated gradients once, so the runs
# differ by fp16 rounding of the gradients only; measured max relative difference 1.3e-5 over
# 12 steps (CPU, torch 2.13). The bound leaves a 40x margin.
RTOL = 5e-4


def _common(tmp_path) -> list[str]:
    train, evals = tmp_path / "train.npy", tmp_path / "eval.npy"
    if not train.exists():
        np.save(train, repeated_sequence(64, 48, 8192))
        np.save(evals, repeated_sequence(64, 48, 2048, seed=1))
    return ["train", "--vocab-size", "64", "--d-model", "16", "--n-layers", "1", "--seq-len", "32",
            "--lr", "1e-2", "--min-lr", "1e-3", "--warmup", "2", "--max-steps", "12", "--eval-every", "0",
            "--final-eval-tokens", "512", "--log-every", "1", "--device", "cpu", "--no-progress",
            "--tokens-npy", str(train), "--eval-tokens-npy", str(evals)]


def _torchrun(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """2 ranks of ``args`` (``["-m", "muse", ...]`` or a script and its arguments) under torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in open(out / "log.jsonl") if '"train"' in line]


@pytest.mark.parametrize("model", [[], ["--preset", "mix-tiny", "--model-arg", "d_ffn=32", "--model-arg", "tie_head=true"],
                                   ["--preset", "mix-tiny", "--model-arg", "d_ffn=32", "--model-arg", "pointer_dim=8"],
                                   ["--model", "phase2"], ["--model", "gpt"],
                                   ["--preset", "mix-tiny", "--model-arg", "d_ffn=32", "--optimizer", "muon"]],
                         ids=["seed-block", "mix-tied", "mix-pointer", "phase2", "gpt", "mix-muon"])
# phase2, gpt: fp32 models (their gradients are averaged as they are); mix-tied: the one table gets
# both uses' gradients; mix-pointer: the copy path's parameters are used outside the DDP-wrapped
# forward (in the loss), as the head's are; mix-muon: Muon steps the all-reduced planar gradients on every rank
def test_two_ranks_match_one_rank_at_the_same_global_batch(tmp_path, model):
    common = _common(tmp_path) + ["--dropout", "0", *model]  # dropout masks differ between layouts
    assert main([*common, "--batch-size", "8", "--out", str(tmp_path / "one")]) == 0
    _torchrun(["-m", "muse", *common, "--batch-size", "4", "--out", str(tmp_path / "two")])
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 12
    assert two[0] == pytest.approx(one[0], rel=1e-6)  # same weights, same blocks
    assert two == pytest.approx(one, rel=RTOL)
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["world_size"] == 2 and res["tokens_per_step"] == 8 * 32
    assert res["dist_backend"] == "gloo" and json.loads((tmp_path / "one" / "results.json").read_text())[
        "dist_backend"] is None
    saved = load_file(tmp_path / "two" / "last.safetensors")
    assert ("model.lm_head.weight" in saved) == ("tie_head=true" not in model)  # a tied head saves no weight of its own


def test_two_rank_resume_is_bitwise(tmp_path):
    """Each rank's RNG (dropout 0.1) is gathered into the checkpoint and restored on resume."""
    common = _common(tmp_path) + ["--dropout", "0.1", "--batch-size", "4"]
    _torchrun(["-m", "muse", *common, "--out", str(tmp_path / "straight")])
    _torchrun(["-m", "muse", *common, "--out", str(tmp_path / "split"), "--stop-after", "6"])
    ck = load_file(tmp_path / "split" / "last.safetensors")
    assert {k.split(".")[1] for k in ck if k.startswith("rng.")} == {"0", "1"}
    _torchrun(["-m", "muse", *common, "--out", str(tmp_path / "split"),
               "--resume", str(tmp_path / "split" / "last.safetensors")])
    assert _losses(tmp_path / "split") == _losses(tmp_path / "straight")


_COMPILED_RUN = """
import json, sys
from muse.train import train
from muse.train.synthetic import synthetic_data, tiny_config

kw = dict(max_steps=8, eval_every=0, final_eval_tokens=256, batch_size=2, grad_accum=2, log_every=1)
kw.update(json.loads(sys.argv[2]))
train(tiny_config(sys.argv[1], **kw), synthetic_data())
"""
_TINY = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, dropout=0.1)  # tiny_config's model


@pytest.mark.parametrize("model", [{}, {"preset": "mix-tiny",
                                        "model_overrides": {**_TINY, "d_ffn": 32, "pointer_dim": 8}}],
                         ids=["seed-block", "mix-pointer"])
def test_two_rank_compiled_training_matches_eager_and_resumes_bitwise(tmp_path, model):
    """DDP under its compiled wrapper (aot_eager here, inductor on CUDA) with the eager loss, which reads the
    head (and the copy path) from under both wrappers, two micro-batches a step (the first under no_sync): the
    same losses as eager DDP bit for bit, and a stop + resume gives the straight run's losses exactly (until
    2026-12-06 the loss found no lm_head on the compiled wrapper)."""
    script = tmp_path / "run.py"
    script.write_text(_COMPILED_RUN)

    def run(name, compile_, **extra):
        kw = {**model, **extra, **({"compile": True, "compile_backend": "aot_eager"} if compile_ else {})}
        _torchrun([str(script), str(tmp_path / name), json.dumps(kw)])
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert res["compiled"] is compile_ and res["world_size"] == 2
        assert res["compile_mode"] == ("default" if compile_ else None)  # DDP's default: torch's mode
        return _losses(tmp_path / name)

    eager = run("eager", False)
    straight = run("straight", True)
    assert len(straight) == 8 and straight == eager
    run("split", True, stop_after=4)
    assert run("split", True, resume=str(tmp_path / "split" / "last.safetensors")) == straight


@pytest.mark.parametrize("where", ["cpu", pytest.param("cuda", marks=requires_cuda),
                                   pytest.param("cuda-graphs", marks=requires_cuda)])
def test_two_rank_inductor_training_is_close_to_eager_and_resumes_bitwise(tmp_path, where):
    """DDP compiled by inductor: the Stage 1 mix block with a copy path trains as eager DDP does, to inductor's own
    rounding (measured 1.1e-5 relative over 8 steps, CPU, torch 2.13; bound 1e-4), and stop + resume repeats the
    straight run's losses exactly. On CPU, gloo with inductor's C++ code; on CUDA, two gloo ranks share GPU 0
    (--dist-backend gloo) with inductor's Triton code in the graphs DDP splits, dropout 0 (inductor's CUDA random
    numbers are not eager's); "cuda-graphs": those graphs replayed from CUDA graphs (--compile-mode reduce-overhead),
    the all-reduces between them (failed until 2026-12-07: a micro-batch's gradients stayed in the graph's memory
    across the next forward's replay)."""
    script = tmp_path / "run.py"
    script.write_text(_COMPILED_RUN)
    model = {"preset": "mix-tiny", "model_overrides": {**_TINY, "d_ffn": 32, "pointer_dim": 8}}
    if where.startswith("cuda"):
        model = {**model, "device": "cuda", "dist_backend": "gloo",
                 "model_overrides": {**model["model_overrides"], "dropout": 0.0}}
    mode = "reduce-overhead" if where == "cuda-graphs" else None

    def run(name, compile_, **extra):
        kw = {**model, **extra, "compile": compile_,
              **({"compile_backend": "inductor", "compile_mode": mode} if compile_ else {})}
        _torchrun([str(script), str(tmp_path / name), json.dumps(kw)])
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert res["compiled"] is compile_ and res["world_size"] == 2 and res["dist_backend"] == "gloo"
        assert res["compile_backend"] == ("inductor" if compile_ else None)
        assert res["compile_mode"] == ((mode or "default") if compile_ else None)  # DDP's default: torch's mode
        assert res["environment"]["device"] == ("cpu" if where == "cpu" else "cuda:0")
        return _losses(tmp_path / name)

    eager = run("eager", False)
    straight = run("straight", True)
    assert len(straight) == 8
    assert np.allclose(straight, eager, rtol=1e-4, atol=0.0), (straight, eager)
    run("split", True, stop_after=4)
    assert run("split", True, resume=str(tmp_path / "split" / "last.safetensors")) == straight


def test_dist_backend_choice_and_bad_values():
    """auto: NCCL on CUDA, gloo on CPU; gloo may be asked on CUDA; NCCL on the CPU and unknown names are errors."""
    import torch

    assert resolve_backend("auto", torch.device("cpu")) == "gloo"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "nccl"
    assert resolve_backend("gloo", torch.device("cuda", 0)) == "gloo"
    with pytest.raises(ValueError, match="backend='nccl' needs CUDA tensors, this run's device is cpu"):
        resolve_backend("nccl", torch.device("cpu"))
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("mpi", torch.device("cpu"))
    with pytest.raises(ValueError, match="dist_backend must be one of .*got 'NCCL'"):
        TrainConfig(dist_backend="NCCL")


def test_nccl_on_cpu_is_refused_by_the_cli(tmp_path):
    proc = _torchrun(["-m", "muse", *_common(tmp_path), "--dist-backend", "nccl", "--out", str(tmp_path / "o")],
                     check=False)
    assert proc.returncode != 0
    assert "backend='nccl' needs CUDA tensors" in proc.stderr + proc.stdout
