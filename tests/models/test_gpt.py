"""GPT reference model: config, presets, parameter count, init, inputs, forward, AMP, KV cache, training."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from muse.models import MODELS, GPTConfig, GPTModel, KVCache, build_model, make_config
from muse.models.gpt import PRESETS, expected_parameter_count
from muse.models.phase2 import PRESETS as PHASE2_PRESETS
from muse.models.stage1 import PRESETS as STAGE1_PRESETS
from muse.train import train
from muse.train.synthetic import synthetic_data, tiny_config

VOCAB = 97


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread per test process: with pytest-xdist on 2 cores, more only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(**overrides) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(GPTConfig(**{**PRESETS["tiny"], "vocab_size": VOCAB, **overrides}))


def _ids(b=2, s=16, vocab=VOCAB, seed=0) -> torch.Tensor:
    return torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config, presets, registry

def test_gpt_config_defaults():
    c = GPTConfig()
    assert (c.vocab_size, c.d_model, c.n_layers, c.max_seq_len, c.n_heads) == (50257, 512, 6, 1024, 8)
    assert (c.ffn_mult, c.dropout, c.bias, c.d_head, c.dtype) == (4, 0.1, True, 64, torch.float32)
    assert json.loads(json.dumps(c.to_dict())) == dataclasses.asdict(c)


@pytest.mark.parametrize("field,value,exc,match", [
    ("vocab_size", 0, ValueError, "vocab_size"),
    ("vocab_size", 2.0, TypeError, "vocab_size"),
    ("d_model", 0, ValueError, "d_model"),
    ("n_layers", -1, ValueError, "n_layers"),
    ("max_seq_len", 0, ValueError, "max_seq_len"),
    ("n_heads", 0, ValueError, "n_heads"),
    ("n_heads", 3, ValueError, "divisible by n_heads"),
    ("ffn_mult", 0, ValueError, "ffn_mult"),
    ("dropout", 1.0, ValueError, "dropout"),
    ("dropout", "0.1", TypeError, "dropout"),
    ("bias", 1, TypeError, "bias must be a bool"),
    ("layer_norm_eps", 0.0, ValueError, "layer_norm_eps"),
])
def test_gpt_config_validation(field, value, exc, match):
    with pytest.raises(exc, match=match):
        GPTConfig(**{field: value})


def test_gpt_presets_match_the_other_models():
    """The GPT has the sizes the bench trains at one preset name (Stage 1's variant presets and
    Phase 2's 'original' presets are extra names of those models)."""
    assert set(PRESETS) == set(STAGE1_PRESETS) - {"mix", "mix-tiny", "mix-copy", "mix-copy-tiny"}
    for name, preset in PRESETS.items():
        assert {k: preset[k] for k in STAGE1_PRESETS[name]} == STAGE1_PRESETS[name]
        assert preset["n_heads"] == PHASE2_PRESETS[name]["n_heads"]
    assert [PRESETS[p]["n_heads"] for p in ("tiny", "small", "seed")] == [4, 4, 8]


def test_gpt_registry_and_config_type():
    assert MODELS["gpt"].config_cls is GPTConfig and MODELS["gpt"].model_cls is GPTModel
    model = build_model("gpt", "tiny", vocab_size=50)
    assert isinstance(model, GPTModel) and model.max_seq_len == 128 and model.mixes_tokens
    with pytest.raises(ValueError, match="unknown config field"):
        make_config("gpt", "tiny", mixers=())
    with pytest.raises(TypeError, match="config must be a GPTConfig"):
        GPTModel(dataclasses.asdict(GPTConfig()))


# ---------------------------------------------------------------- parameters and init

@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("bias", [True, False])
def test_gpt_parameter_count_matches_closed_form(preset, bias):
    model = build_model("gpt", preset, device="meta", bias=bias)
    assert model.num_parameters() == expected_parameter_count(model.config)


def test_gpt_seed_parameter_count():
    """The same-size GPT of issue 10 (d 512, 6 layers, 8 heads, untied head): 70.9M parameters."""
    assert build_model("gpt", "seed", device="meta").num_parameters() == 70_902_784


def test_gpt_head_contract_and_untied_embedding():
    model = _tiny()
    assert model.lm_head.weight.shape == (VOCAB, 64) and model.lm_head.bias is None
    assert model.lm_head.weight.data_ptr() != model.token_embedding.weight.data_ptr()


def test_gpt2_initialisation():
    model = _tiny(n_layers=4, d_model=128, vocab_size=512)
    residual = 0.02 / math.sqrt(2 * 4)
    for name, p in model.named_parameters():
        if name.endswith((".attn.proj.weight", ".mlp.proj.weight")):
            assert p.std().item() == pytest.approx(residual, rel=0.05), name
        elif name.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:  # qkv, fc, embeddings, head
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name


# ---------------------------------------------------------------- inputs

@pytest.mark.parametrize("ids,exc,match", [
    (torch.tensor([[0, VOCAB]]), ValueError, "out of range"),
    (torch.tensor([[0, -1]]), ValueError, "negative"),
    (torch.tensor([0, 1, 2]), ValueError, "2-D"),
    (torch.zeros(1, 4), TypeError, "integer tensor"),
    (torch.zeros(1, 129, dtype=torch.long), ValueError, "max_seq_len=128"),
    ([[0, 1]], TypeError, "torch.Tensor"),
])
def test_gpt_bad_inputs(ids, exc, match):
    with pytest.raises(exc, match=match):
        _tiny()(ids)


# ---------------------------------------------------------------- forward / backward

def test_gpt_forward_hidden_and_diagnostics():
    model = _tiny().eval()
    ids = _ids(3, 20)
    logits = model(ids)
    assert logits.shape == (3, 20, VOCAB) and logits.dtype == torch.float32
    hidden = model(ids, return_hidden=True)
    assert hidden.shape == (3, 20, 64) and hidden.dtype == torch.float32
    assert torch.equal(model.lm_head(hidden), logits)  # the hidden state is exactly what the head consumes
    logits2, diag = model(ids, return_diagnostics=True)
    assert torch.equal(logits, logits2)
    assert list(diag) == ["embedding", "layer_0", "layer_1", "final_norm", "output"]
    assert diag["output"]["nonfinite"] == 0
    assert model(_ids(2, 1)).shape == (2, 1, VOCAB)
    assert model(_ids(2, 128)).shape == (2, 128, VOCAB)


def test_gpt_no_cross_sample_coupling():
    model = _tiny().eval()
    ids = _ids(4, 24)
    other = ids.clone()
    other[1:] = _ids(3, 24, seed=5)
    assert torch.equal(model(ids)[0], model(other)[0])


def test_gpt_backward_reaches_every_parameter():
    model = _tiny()
    ids = _ids(2, 32)
    F.cross_entropy(model(ids[:, :-1]).reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


def test_gpt_bf16_autocast_matches_float32():
    """The trainer's --amp bf16 autocasts the linears and attention; the loss stays close to fp32."""
    model = _tiny(dropout=0.0)
    ids = _ids(2, 64)
    ref = F.cross_entropy(model(ids[:, :-1]).reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
    assert logits.dtype == torch.bfloat16
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert abs(loss.item() - ref.item()) < 0.02, (loss.item(), ref.item())


def test_gpt_float64_conversion():
    assert _tiny().double().eval()(_ids()).dtype == torch.float64


def test_gpt_dropout_only_in_training():
    model = _tiny(dropout=0.5)
    ids = _ids()
    assert not torch.equal(model(ids), model(ids))
    model.eval()
    assert torch.equal(model(ids), model(ids))


def test_gpt_statistics_count_forwards_and_nonfinite_stages():
    model = _tiny().eval()
    ids = _ids()
    model(ids)
    model(ids, return_hidden=True)
    stats = model.get_statistics()
    assert stats["forward_count"] == 2 and stats["nonfinite_count"] == 0
    assert stats["nonfinite_by_stage"] == {"embedding": 0, "layer_0": 0, "layer_1": 0, "logits": 0}
    with torch.no_grad():
        model.blocks[1].mlp.proj.bias[0] = math.inf
    model(ids)
    stats = model.get_statistics()
    assert stats["forward_count"] == 3 and stats["nonfinite_count"] == 1
    assert stats["nonfinite_by_stage"]["layer_0"] == 0 and stats["nonfinite_by_stage"]["layer_1"] == 1


def test_gpt_causal_at_a_length_above_one_attention_tile():
    """Bit-exact causality in float32 at S = 300 (the shared test runs float64 at S = 40)."""
    model = _tiny(max_seq_len=320).eval()
    ids = _ids(2, 300)
    for t in (0, 77, 255, 298):
        changed = ids.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
        a, b = model(ids), model(changed)
        assert torch.equal(a[:, : t + 1], b[:, : t + 1]), t
        assert not torch.equal(a[:, t + 1], b[:, t + 1]), t


# ---------------------------------------------------------------- KV cache

def test_gpt_step_token_by_token_equals_full_forward():
    model = _tiny().eval()
    ids = _ids(3, 40)
    full = model(ids)
    cache, outs = None, []
    for t in range(ids.shape[1]):
        logits, cache = model.step(ids[:, t : t + 1], cache)
        outs.append(logits)
    assert cache.length == 40 and cache.batch_size == 3
    assert len(cache.keys) == 2 and cache.keys[0].shape == (3, 4, 40, 16)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)


def test_gpt_step_prompt_then_chunks_equals_full_forward():
    model = _tiny().eval()
    ids = _ids(2, 30)
    full = model(ids)
    first, cache = model.step(ids[:, :12])  # a prompt: causal SDPA from position 0
    middle, cache = model.step(ids[:, 12:17], cache)  # a chunk after a cache: explicit offset mask
    one, cache = model.step(ids[:, 17:18], cache)  # one query: no mask
    tail, cache = model.step(ids[:, 18:], cache)
    got = torch.cat([first, middle, one, tail], dim=1)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
    assert cache.length == 30


def test_gpt_step_leaves_the_cache_it_was_given_unchanged():
    model = _tiny().eval()
    _, cache = model.step(_ids(1, 5))
    keys = [k.clone() for k in cache.keys]
    a, _ = model.step(_ids(1, 1, seed=1), cache)
    b, _ = model.step(_ids(1, 1, seed=1), cache)
    assert torch.equal(a, b) and cache.length == 5
    assert all(torch.equal(k, k0) for k, k0 in zip(cache.keys, keys, strict=True))


def test_gpt_step_rejects_bad_input():
    model = _tiny().eval()
    _, cache = model.step(_ids(2, 120))
    with pytest.raises(ValueError, match="exceeds max_seq_len=128"):
        model.step(_ids(2, 9), cache)
    with pytest.raises(ValueError, match="batch size 3, the cache 2"):
        model.step(_ids(3, 1), cache)
    with pytest.raises(TypeError, match="cache must be a KVCache"):
        model.step(_ids(2, 1), {"keys": []})
    with pytest.raises(ValueError, match="cache has 1 layers"):
        model.step(_ids(2, 1), KVCache(cache.keys[:1], cache.values[:1], 120, 2))
    with pytest.raises(ValueError, match="at least one token"):
        model.step(_ids(2, 0), cache)
    with pytest.raises(ValueError, match="out of range"):
        model.step(torch.tensor([[VOCAB]]))


# ---------------------------------------------------------------- training through the trainer

def test_gpt_trains_through_the_trainer(tmp_path):
    overrides = dict(vocab_size=64, d_model=16, n_layers=1, max_seq_len=32, n_heads=2)
    res = train(tiny_config(str(tmp_path), model="gpt", model_overrides=overrides, max_steps=40, lr=1e-2),
                synthetic_data())
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "log.jsonl")
              if json.loads(line)["type"] == "train"]
    assert losses[0] > 3.9  # ~ ln 64 at init
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    assert res["status"] == "completed" and res["skipped_steps"] == 0
    assert res["model"]["parameters"] == expected_parameter_count(GPTConfig(**overrides))
