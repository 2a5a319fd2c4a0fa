"""Checkpoint format, atomic writes, compatibility checks and RNG capture."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import muse.train.checkpoint as ckpt_io
from muse.train import load_checkpoint, train
from muse.train.synthetic import synthetic_data, tiny_config

DATA = synthetic_data()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(str(out), max_steps=3), DATA)
    return out


def test_round_trip_holds_every_part_of_the_state(trained):
    ck = load_checkpoint(trained / "last.safetensors")
    assert ck.model_name == "stage1" and ck.world_size == 1
    assert ck.model_config["d_model"] == 16 and ck.model_config["dropout"] == 0.1
    assert ck.train_config["max_steps"] == 3 and ck.train_config["total_steps"] == 3
    assert ck.counters["step"] == 3 and ck.counters["tokens_seen"] == 3 * 4 * 32
    assert ck.data_state == {"epoch": 0, "position": 12, "seed": 1337, "seq_len": 32, "n_blocks": 255}
    assert ck.optimizer["kind"] == "MixedPrecisionOptimizer"
    assert ck.optimizer["loss_scaler"]["scale"] == 2.0**16
    model = ck.prefixed("model.")
    masters = ck.prefixed("master.")
    # every trainable parameter has an fp32 master; the frozen position table has none
    assert set(model) - set(masters) == {"embedding.position.weight"} and set(masters) < set(model)
    assert model["lm_head.weight"].dtype == torch.float16
    for name, m in masters.items():
        assert m.dtype == torch.float32 and torch.equal(m.half(), model[name]), name
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert f"optim.{key}.lm_head.weight" in ck.tensors
    assert float(ck.tensors["optim.step.lm_head.weight"]) == 3.0
    rng = ck.prefixed("rng.0.")
    assert rng["torch_cpu"].dtype == torch.uint8 and rng["numpy_keys"].shape == (624,)
    with safe_open(str(trained / "last.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == ckpt_io.FORMAT
    assert json.loads(meta["train_config"])["model"] == "stage1"


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    state = ckpt_io.rng_state()
    want = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt_io.set_rng_state(state)
    got = (random.random(), random.gauss(0, 1), np.random.rand(), torch.rand(3))
    assert got[:3] == want[:3] and torch.equal(got[3], want[3])


def test_crash_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    ckpt_io.atomic_save({"x": torch.ones(4)}, {"format": "old"}, path)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ckpt_io, "save_file", crash)
    with pytest.raises(OSError, match="simulated"):
        ckpt_io.atomic_save({"x": torch.zeros(4)}, {"format": "new"}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]  # no temp file left


def test_resume_refuses_another_model_config(trained, tmp_path):
    other = tiny_config(str(tmp_path), max_steps=3, resume=str(trained / "last.safetensors"),
                        model_overrides=dict(vocab_size=64, d_model=32, n_layers=1, max_seq_len=32, dropout=0.1))
    with pytest.raises(ValueError, match="model config differs.*d_model: checkpoint 16 vs run 32"):
        train(other, DATA)


def test_a_field_added_after_the_checkpoint_compares_as_its_default(trained):
    """A checkpoint written before a config field existed (the field missing from its model_config)
    resumes when the run uses the field's default, and is refused when it does not."""
    ck = ckpt_io.load_checkpoint(trained / "last.safetensors")
    current = dict(ck.model_config)
    old = dataclasses.replace(ck, model_config={k: v for k, v in current.items() if k != "tie_head"})
    assert "tie_head" in current and current["tie_head"] is False
    ckpt_io.check_compatible(old, ck.model_name, current, {})
    with pytest.raises(ValueError, match="tie_head: checkpoint False vs run True"):
        ckpt_io.check_compatible(old, ck.model_name, {**current, "tie_head": True}, {})


def test_a_training_setting_added_after_the_checkpoint_compares_as_its_default(trained, tmp_path):
    ck = load_checkpoint(trained / "last.safetensors")
    assert ck.train_config["decay_embeddings"] is False
    old = dataclasses.replace(ck, train_config={k: v for k, v in ck.train_config.items() if k != "decay_embeddings"})
    ckpt_io.check_compatible(old, ck.model_name, dict(ck.model_config), {"decay_embeddings": False, "lr": ck.train_config["lr"]})
    with pytest.raises(ValueError, match="decay_embeddings"):
        ckpt_io.check_compatible(old, ck.model_name, dict(ck.model_config), {"decay_embeddings": True})
    other = tiny_config(str(tmp_path), max_steps=3, decay_embeddings=True, resume=str(trained / "last.safetensors"))
    with pytest.raises(ValueError, match="training settings differ.*decay_embeddings"):
        train(other, DATA)


def test_resume_refuses_other_training_settings(trained, tmp_path):
    other = tiny_config(str(tmp_path), max_steps=3, lr=5e-3, resume=str(trained / "last.safetensors"))
    with pytest.raises(ValueError, match="training settings differ.*lr"):
        train(other, DATA)


def test_resume_refuses_another_model(trained, tmp_path):
    other = tiny_config(str(tmp_path), model="phase2", resume=str(trained / "last.safetensors"),
                        model_overrides=dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32))
    with pytest.raises(ValueError, match="'stage1' model"):
        train(other, DATA)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a MUSE training checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(garbage)


def test_no_pickle_based_loading_in_the_package():
    from pathlib import Path

    root = Path(ckpt_io.__file__).resolve().parents[1]
    for path in list((root / "train").glob("*.py")) + [root / "cli" / "train.py"]:
        text = path.read_text()
        for banned in ("torch.load(", "import pickle", "pickle.load", "allow_pickle=True"):
            assert banned not in text, f"{path.name} uses {banned}"
