"""Training under torch.compile: exact resume, plain checkpoint keys, compile time reported apart.

The aot_eager backend keeps most of these CPU tests fast (inductor builds C++ for minutes here; one test runs it
on a one-layer model); the same code path runs inductor on CUDA, where --compile is the default.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from muse.train import train
from muse.train.runlog import results_table
from muse.train.synthetic import synthetic_data, tiny_config

DATA = synthetic_data()


def _losses(out) -> list[float]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["type"] == "train"]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_compiled_training_resumes_bitwise_and_saves_plain_keys(tmp_path, optimizer):
    kw = dict(max_steps=6, eval_every=3, eval_tokens=128, final_eval_tokens=256, compile=True,
              compile_backend="aot_eager", optimizer=optimizer)
    straight, split = tmp_path / "straight", tmp_path / "split"
    res = train(tiny_config(str(straight), **kw), DATA)
    assert res["compiled"] is True and res["compile_backend"] == "aot_eager" and res["compile_mode"] == "default"
    assert res["first_step_s"] > 0 and res["steady_step_s"] > 0 and res["compile_s"] >= 0
    assert res["steady_tokens_per_s"] == pytest.approx(res["tokens_per_step"] / res["steady_step_s"])
    assert f"| train tok/s, steady step (compile excluded) | {res['steady_tokens_per_s']:.0f} |" in results_table(res)
    train(tiny_config(str(split), stop_after=3, **kw), DATA)
    train(tiny_config(str(split), resume=str(split / "last.safetensors"), **kw), DATA)
    assert _losses(straight) == _losses(split) and len(_losses(split)) == 6
    ta, tb = load_file(straight / "last.safetensors"), load_file(split / "last.safetensors")
    assert not [k for k in ta if "_orig_mod" in k or ".module." in k]
    for key in ta:
        if key.startswith(("model.", "master.", "optim.")):
            assert torch.equal(ta[key], tb[key]), key


def test_eager_is_the_cpu_default_and_is_recorded(tmp_path):
    res = train(tiny_config(str(tmp_path), max_steps=2), DATA)
    assert res["compiled"] is False and res["compile_backend"] is None and res["compile_mode"] is None
    assert res["first_step_s"] > 0 and res["compile_s"] is None  # nothing compiled: no compile time
    assert "| compiled (compile s) | no |" in results_table(res)


def test_the_results_table_gives_the_compile_time_apart():
    res = {"status": "completed", "model": {"name": "stage1", "preset": "tiny", "parameters": 10},
           "environment": {"device_name": "cpu"}, "world_size": 1, "train_split": "valid", "eval_split": "test",
           "steps": 4, "skipped_steps": 0, "tokens_seen": 64, "final_eval": None, "train_tokens_per_s": 10.0,
           "wall_time_s": 2.0, "peak_memory": {"bytes": 2**20, "kind": "x"}, "compiled": True, "compile_s": 32.66}
    table = results_table(res)
    assert "| compiled (compile s) | yes (32.7 s) |" in table and "| train tok/s (first step included) | 10 |" in table
    graphs = results_table({**res, "compile_mode": "reduce-overhead"})
    assert "| compiled (compile s) | yes (32.7 s, reduce-overhead: CUDA graphs) |" in graphs
    assert "| compiled (compile s) | yes (32.7 s) |" in results_table({**res, "compile_mode": "default"})


def test_a_compiled_run_records_its_recompute_switches(tmp_path, monkeypatch):
    """MUSE_RECOMPUTE_CHAIN_IN_COMPILE changes what a compiled step keeps, so results.json and the table name it;
    a value other than 0 or 1 is a ValueError before anything trains."""
    from muse.complex import recompute

    kw = dict(max_steps=2, eval_every=0, final_eval_tokens=128, compile=True, compile_backend="aot_eager")
    monkeypatch.setenv(recompute.CHAIN_IN_COMPILE_ENV, "1")
    res = train(tiny_config(str(tmp_path / "on"), **kw), DATA)
    assert res["compile_recompute"] == ["branches"]
    assert "recomputes branches (MUSE_RECOMPUTE_*_IN_COMPILE)" in results_table(res)
    monkeypatch.setenv(recompute.IN_COMPILE_ENV, "1")
    assert recompute.compile_switches() == ["regions", "branches"]
    monkeypatch.setenv(recompute.CHAIN_IN_COMPILE_ENV, "yes")
    with pytest.raises(ValueError, match="MUSE_RECOMPUTE_CHAIN_IN_COMPILE must be 0 or 1, got 'yes'"):
        train(tiny_config(str(tmp_path / "bad"), **kw), DATA)
    assert not (tmp_path / "bad" / "log.jsonl").exists()


def test_compile_mode_is_checked():
    with pytest.raises(ValueError, match="compile_mode must be one of"):
        tiny_config("x", compile_mode="max-autotune-no-cudagraphs")
    with pytest.raises(ValueError, match="needs compile_backend=.inductor."):
        tiny_config("x", compile=True, compile_backend="aot_eager", compile_mode="max-autotune")
    with pytest.raises(ValueError, match="needs compile_backend='inductor'"):
        tiny_config("x", compile=True, compile_backend="aot_eager", compile_mode="reduce-overhead")


def test_compile_memory_budget_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"compile_memory_budget must be > 0.0, got 0.0"):
        tiny_config("x", compile=True, compile_memory_budget=0.0)
    with pytest.raises(TypeError, match="compile_memory_budget must be a real number, got str"):
        tiny_config("x", compile=True, compile_memory_budget="0.5")
    for kw in (dict(compile=False), dict(compile=True, compile_backend="aot_eager")):
        with pytest.raises(ValueError, match="compile_memory_budget=0.5 is read by inductor's partitioner"):
            tiny_config("x", compile_memory_budget=0.5, **kw)
    with pytest.raises(ValueError, match=r"compile_memory_budget=0.5 needs a compiled run; compile is off here"):
        train(tiny_config(str(tmp_path / "out"), max_steps=2, compile_memory_budget=0.5), DATA)  # CPU: eager


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_cuda_training_replays_cuda_graphs_by_default_and_resumes_bitwise(tmp_path):
    """On CUDA a compiled single-process run replays CUDA graphs unless told otherwise, records it, and a
    resumed run (a fresh process's graphs) continues bit for bit, dropout included; the default mode trains
    the same steps to within reassociation."""
    kw = dict(max_steps=6, eval_every=3, eval_tokens=128, final_eval_tokens=256, device="cuda", compile=True)
    straight, split, plain = tmp_path / "straight", tmp_path / "split", tmp_path / "plain"
    res = train(tiny_config(str(straight), **kw), DATA)
    assert res["compile_mode"] == "reduce-overhead" and res["skipped_steps"] == 0
    assert "reduce-overhead: CUDA graphs" in results_table(res)
    train(tiny_config(str(split), stop_after=3, **kw), DATA)
    torch._dynamo.reset()  # the resumed half compiles and records its graphs afresh, as a new process would
    train(tiny_config(str(split), resume=str(split / "last.safetensors"), **kw), DATA)
    assert _losses(straight) == _losses(split) and len(_losses(split)) == 6
    ta, tb = load_file(straight / "last.safetensors"), load_file(split / "last.safetensors")
    for key in ta:
        if key.startswith(("model.", "master.", "optim.")):
            assert torch.equal(ta[key], tb[key]), key
    default = train(tiny_config(str(plain), compile_mode="default", **kw), DATA)
    assert default["compile_mode"] == "default"
    torch.testing.assert_close(_losses(plain), _losses(straight), rtol=1e-3, atol=1e-3)
    # two micro-batches a step: each backward's gradients leave the graph's memory before the next forward replays
    accum = {mode: tmp_path / f"accum-{mode}" for mode in ("reduce-overhead", "default")}
    for mode, out in accum.items():
        res = train(tiny_config(str(out), grad_accum=2, **{**kw, **({} if mode != "default" else
                                                                    {"compile_mode": "default"})}), DATA)
        assert res["compile_mode"] == mode and res["skipped_steps"] == 0
    torch.testing.assert_close(_losses(accum["reduce-overhead"]), _losses(accum["default"]), rtol=1e-3, atol=1e-3)


def test_compile_mode_without_a_compiled_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"compile_mode='reduce-overhead' \(--compile-mode\) needs a compiled run"):
        train(tiny_config(str(tmp_path / "out"), max_steps=2, compile_mode="reduce-overhead"), DATA)
    assert not (tmp_path / "out" / "log.jsonl").exists()
    with pytest.raises(ValueError, match=r"compile_mode='max-autotune' \(--compile-mode\) replays CUDA graphs: it "
                                         r"needs a CUDA device, got cpu"):
        train(tiny_config(str(tmp_path / "cpu"), max_steps=2, compile=True, compile_mode="max-autotune"), DATA)
    assert not (tmp_path / "cpu" / "log.jsonl").exists()


@pytest.mark.parametrize("compile", [False, True])
def test_kept_logits_train_the_same_steps_bit_for_bit(tmp_path, compile):
    """--keep-logits changes where the loss's chunk logits come from in backward, not a value."""
    kw = dict(max_steps=3, eval_every=0, final_eval_tokens=128, compile=compile, compile_backend="aot_eager")
    plain = train(tiny_config(str(tmp_path / "plain"), **kw), DATA)
    kept = train(tiny_config(str(tmp_path / "kept"), keep_logits=True, **kw), DATA)
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "kept") and len(_losses(tmp_path / "kept")) == 3
    assert plain["final_eval"] is not None and plain["final_eval"] == kept["final_eval"]
    with pytest.raises(TypeError, match="keep_logits must be a bool"):
        tiny_config(str(tmp_path / "bad"), keep_logits="yes")


def test_inductor_training_on_cpu_follows_eager(tmp_path):
    """One real inductor build on the CPU (the tests above trace with aot_eager, which generates no code): the
    mix block with its per-token scan, 3 steps. Inductor's AVX-512 code once turned every gradient of this model
    non-finite (every step skipped; muse.complex.set_gemm_policy); eager and compiled losses must agree."""
    model = dict(preset="mix-tiny", model_overrides=dict(vocab_size=64, d_model=64, n_layers=1, max_seq_len=64,
                                                         dropout=0.0))
    kw = dict(seq_len=64, batch_size=2, max_steps=3, warmup=1, final_eval_tokens=256, **model)
    eager = train(tiny_config(str(tmp_path / "eager"), **kw), DATA)
    compiled = train(tiny_config(str(tmp_path / "inductor"), compile=True, compile_backend="inductor", **kw), DATA)
    assert compiled["compiled"] is True and compiled["compile_backend"] == "inductor"
    assert eager["skipped_steps"] == compiled["skipped_steps"] == 0
    torch.testing.assert_close(_losses(tmp_path / "inductor"), _losses(tmp_path / "eager"), rtol=1e-3, atol=1e-3)
    assert compiled["compile_memory_budget"] == 1.0 and eager["compile_memory_budget"] is None
    assert compiled["compile_recompute"] == [] and eager["compile_recompute"] is None
    lean = train(tiny_config(str(tmp_path / "lean"), compile=True, compile_memory_budget=0.1, **kw), DATA)
    assert lean["compile_memory_budget"] == 0.1 and "activation memory budget 0.1)" in results_table(lean)
    assert torch._functorch.config.activation_memory_budget == 1.0  # train() puts the process-wide value back
    torch.testing.assert_close(_losses(tmp_path / "lean"), _losses(tmp_path / "inductor"), rtol=1e-4, atol=1e-4)
