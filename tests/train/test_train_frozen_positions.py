"""A frozen parameter (the Stage 1 position table, requires_grad=False) through the optimizer,
the safetensors checkpoint and an exact resume.  (The 2-rank DDP tests in ``test_train_ddp.py``
run the same default config, so DDP sees the frozen table too.)"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from muse.init import zeta_position_table
from muse.train import load_checkpoint, train
from muse.train.checkpoint import model_from_checkpoint
from muse.train.synthetic import synthetic_data, tiny_config

DATA = synthetic_data()
KEY = "embedding.position.weight"


def test_frozen_position_table_is_saved_never_updated_and_resumes_exactly(tmp_path):
    kw = dict(max_steps=6, eval_every=0, final_eval_tokens=256)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(str(straight), **kw), DATA)
    train(tiny_config(str(split), stop_after=3, **kw), DATA)
    train(tiny_config(str(split), resume=str(split / "last.safetensors"), **kw), DATA)

    ck = load_checkpoint(straight / "last.safetensors")
    assert ck.model_config["trainable_positions"] is False
    table = ck.tensors[f"model.{KEY}"]
    want = zeta_position_table(32, 16).half()  # tiny_config: max_seq_len 32, d_model 16
    assert torch.equal(table, want), "the frozen table changed during training"
    assert f"master.{KEY}" not in ck.tensors and not any(k.startswith("optim.") and k.endswith(KEY) for k in ck.tensors)
    assert KEY not in ck.optimizer["names"]
    initial = zeta_position_table(64, 16)  # the token tables did train (zeta init, vocab 64)
    assert not torch.equal(ck.tensors["model.embedding.weight"][0], initial.half())

    a, b = load_file(straight / "last.safetensors"), load_file(split / "last.safetensors")
    for key in a:
        if key.startswith(("model.", "master.", "optim.")):
            assert torch.equal(a[key], b[key]), key

    model, _ = model_from_checkpoint(straight / "last.safetensors")
    p = dict(model.named_parameters())[KEY]
    assert not p.requires_grad and torch.equal(p.detach(), want)
    assert sum(t.numel() for t in model.parameters() if t.requires_grad) == \
        sum(t.numel() for t in model.parameters()) - 32 * 16
