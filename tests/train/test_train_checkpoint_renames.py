"""Checkpoints saved before a model renamed a parameter (Phase 2's ``ffn.out`` -> ``ffn.proj``) still
load and resume: ``load_checkpoint`` renames model, master and optimizer entries by the model's
``upgrade_key``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from muse.train import load_checkpoint, train
from muse.train.checkpoint import model_from_checkpoint
from muse.train.synthetic import synthetic_data, tiny_config

DATA = synthetic_data()
PHASE2 = dict(model="phase2", model_overrides=dict(vocab_size=64, d_model=16, n_layers=2, max_seq_len=32, n_heads=2))


def _rewrite_with_old_names(src, dst) -> None:
    """Write ``src`` as the trainer did before the rename: every ``.ffn.proj.`` name as ``.ffn.out.``."""
    def old(name: str) -> str:
        return name.replace(".ffn.proj.", ".ffn.out.")

    with safe_open(str(src), framework="pt") as fh:
        meta = dict(fh.metadata())
    optimizer = json.loads(meta["optimizer"])
    optimizer["names"] = [old(n) for n in optimizer["names"]]
    meta["optimizer"] = json.dumps(optimizer, sort_keys=True)
    save_file({old(k): v for k, v in load_file(str(src)).items()}, str(dst), metadata=meta)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("renames")
    kw = dict(max_steps=6, eval_every=0, final_eval_tokens=256, **PHASE2)
    train(tiny_config(str(root / "straight"), **kw), DATA)
    train(tiny_config(str(root / "split"), stop_after=3, **kw), DATA)
    _rewrite_with_old_names(root / "split" / "last.safetensors", root / "old.safetensors")
    return root, kw


def test_old_checkpoint_holds_the_old_names_and_loads_under_the_new(runs):
    root, _ = runs
    raw = load_file(str(root / "old.safetensors"))
    assert "model.blocks.1.ffn.out.weight" in raw and "optim.exp_avg.blocks.1.ffn.out.weight" in raw
    new, old = load_checkpoint(root / "split" / "last.safetensors"), load_checkpoint(root / "old.safetensors")
    assert sorted(old.tensors) == sorted(new.tensors)
    assert old.optimizer["names"] == new.optimizer["names"]
    for key in new.tensors:  # rng.0.python_gauss may be NaN (no cached gaussian), so compare bits
        assert torch.equal(old.tensors[key].reshape(-1).view(torch.uint8), new.tensors[key].reshape(-1).view(torch.uint8)), key
    model, _ = model_from_checkpoint(root / "old.safetensors")
    assert torch.equal(model.blocks[1].ffn.proj.weight, new.tensors["model.blocks.1.ffn.proj.weight"])


def test_resume_from_an_old_checkpoint_matches_the_uninterrupted_run(runs, tmp_path):
    root, kw = runs
    resumed = tmp_path / "resumed"
    res = train(tiny_config(str(resumed), resume=str(root / "old.safetensors"), **kw), DATA)
    assert res["steps"] == 6
    a, b = load_file(root / "straight" / "last.safetensors"), load_file(resumed / "last.safetensors")
    for key in a:
        if key.startswith(("model.", "optim.")):
            assert torch.equal(a[key], b[key]), key
