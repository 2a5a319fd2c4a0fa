"""Incremental decoding (``model.step``) gives the logits of one full forward, for every registered
model; generation is deterministic where it should be; ``muse generate`` runs end to end and
rejects bad arguments with one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from muse.cli import main
from muse.data.tokenizer import resolve_tokenizer_dir
from muse.models import build_model, model_names
from muse.train.generate import generate, sample_next
from muse.train.synthetic import repeated_sequence

VOCAB = 97
CASES = [(name, "tiny") for name in model_names()] + [("stage1", "mix-tiny"), ("stage1", "mix-tiny+tied"),
                                                      ("stage1", "mix-tiny+retention"), ("stage1", "mix-tiny+hybrid"),
                                                      ("phase2", "original-tiny"), ("stage1", "mix-tiny+pointer"),
                                                      ("phase2", "tiny+pointer"), ("gpt", "tiny+pointer"),
                                                      ("stage1", "mix-tiny+complex-head"),
                                                      ("stage1", "mix-tiny+complex-head-pointer")]
SUFFIXES = {"+tied": {"tie_head": True}, "+retention": {"mixer": "retention"}, "+hybrid": {"mixer": "hybrid"},
            "+pointer": {"pointer_dim": 8}, "+complex-head": {"head": "complex", "token_table": "real"},
            "+complex-head-pointer": {"head": "complex", "pointer_dim": 8}}


def _model(name: str, preset: str):
    """``preset`` with a suffix of SUFFIXES ("+tied": the tied Stage 1 head; "+retention", "+hybrid": the
    content-addressed mixer in every / every other layer; "+complex-head": the head over both planes): that preset
    with those overrides."""
    preset, plus, suffix = preset.partition("+")
    torch.manual_seed(0)
    return build_model(name, preset, vocab_size=VOCAB, **SUFFIXES.get(plus + suffix, {})).eval()


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_incremental_logits_equal_one_full_forward(name, preset):
    model = _model(name, preset)
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).float()  # (B, S, V)
    logits, cache = model.step(ids[:, :5])  # the prompt in one call, then one token per call
    parts = [logits]
    for t in range(5, ids.shape[1]):
        logits, cache = model.step(ids[:, t:t + 1], cache)
        parts.append(logits)
    inc = torch.cat(parts, dim=1).float()
    assert inc.shape == full.shape and cache.length == ids.shape[1]
    if model.config.dtype == torch.float16:
        # The two paths differ only in rounding order (one-token scans vs the chunked scan, fp16
        # intermediates each within 1 ulp); measured <= 1.5 fp16 ulps of the largest logit
        # (CPU, 2 layers); allow 4 ulps: 4 * 2^-10 * max|logit|.
        tol = 4 * torch.finfo(torch.float16).eps * full.abs().max().item()
    else:
        tol = 1e-5  # fp32: measured <= 2.1e-7
    assert (inc - full).abs().max().item() <= tol


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_greedy_generation_is_deterministic_and_follows_the_forward(name, preset):
    model = _model(name, preset)
    prompt = torch.tensor([[3, 14, 15]])
    a = torch.stack(list(generate(model, prompt, 6, temperature=0.0)), dim=1)  # (1, 6)
    b = torch.stack(list(generate(model, prompt, 6, temperature=0.0)), dim=1)
    assert a.shape == (1, 6) and torch.equal(a, b)
    with torch.no_grad():  # each greedy token is the argmax of the full forward over the text before it
        text = torch.cat([prompt, a], dim=1)
        expected = model(text[:, :-1])[:, prompt.shape[1] - 1:].float().argmax(-1)
    assert torch.equal(a, expected)


def test_seeded_sampling_repeats_and_top_k_one_is_greedy():
    model = _model("gpt", "tiny")
    prompt = torch.tensor([[1, 2]])

    def draw(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return torch.stack(list(generate(model, prompt, 8, generator=gen, **kw)), dim=1)

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))  # 8 draws from ~uniform over 97 tokens
    greedy = torch.stack(list(generate(model, prompt, 8, temperature=0.0)), dim=1)
    assert torch.equal(draw(5, top_k=1, temperature=2.0), greedy)
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])
    picks = {int(sample_next(logits, 1.0, 2, torch.Generator().manual_seed(s))) for s in range(50)}
    assert picks == {1, 3}


def test_top_p_keeps_the_nucleus():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0]])  # probabilities 0.005, 0.718, 0.013, 0.264

    def picks(top_p, **kw):
        return {int(sample_next(logits, 1.0, generator=torch.Generator().manual_seed(s), top_p=top_p, **kw))
                for s in range(200)}

    assert picks(0.5) == {1}  # the most likely token alone holds more than half
    assert picks(0.9) == {1, 3}
    assert picks(0.99) == {1, 2, 3}
    assert picks(0.9, top_k=1) == {1}
    assert picks(1e-9) == {1}  # any nucleus keeps the most likely token
    for s in range(20):  # top_p 1 is no restriction: the same draws as without it
        a = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(s), top_p=1.0)
        b = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(s))
        assert torch.equal(a, b)
    model = _model("gpt", "tiny")
    greedy = torch.stack(list(generate(model, torch.tensor([[1, 2]]), 8, temperature=0.0)), dim=1)
    gen = torch.Generator().manual_seed(4)
    tiny_p = torch.stack(list(generate(model, torch.tensor([[1, 2]]), 8, top_p=1e-6, generator=gen)), dim=1)
    assert torch.equal(tiny_p, greedy)


@pytest.mark.parametrize(("kwargs", "exc", "needle"), [
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=2.0), TypeError, "max_new_tokens"),
    (dict(max_new_tokens=200), ValueError, "max_seq_len"),
    (dict(temperature=-0.5), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_p="most"), TypeError, "top_p"),
    (dict(generator=123), TypeError, "generator"),
    (dict(prompt_ids=torch.zeros(1, 0, dtype=torch.long)), ValueError, "prompt"),
    (dict(prompt_ids=torch.tensor([[VOCAB]])), ValueError, "prompt_ids"),
    (dict(prompt_ids=torch.tensor([[1.0]])), TypeError, "prompt_ids"),
])
def test_generate_rejects_bad_arguments_naming_them(kwargs, exc, needle):
    model = _model("stage1", "tiny")
    args = dict(prompt_ids=torch.tensor([[1, 2]]), max_new_tokens=3) | kwargs
    with pytest.raises(exc, match=needle):
        next(generate(model, args.pop("prompt_ids"), args.pop("max_new_tokens"), **args))


def test_generate_and_step_refuse_misuse():
    model = _model("stage1", "mix-tiny")
    with pytest.raises(ValueError, match="eval"):
        next(generate(model.train(), torch.tensor([[1]]), 1))
    model.eval()
    _, cache = model.step(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="batch size"):
        model.step(torch.tensor([[1], [2]]), cache)
    with pytest.raises(TypeError, match="cache"):
        model.step(torch.tensor([[1]]), "state")
    with pytest.raises(ValueError, match="max_seq_len"):
        model.step(torch.zeros(1, model.max_seq_len - 1, dtype=torch.long), cache)
    with pytest.raises(TypeError, match="Phase2State"):
        _model("phase2", "tiny").step(torch.tensor([[1]]), cache)


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Stage 1 (recurrence) checkpoint trained for 2 steps on synthetic tokens < 64."""
    tmp = tmp_path_factory.mktemp("generate")
    train = tmp / "train.npy"
    np.save(train, repeated_sequence(64, 48, 4096).astype(np.uint16))
    args = ["train", "--model", "stage1", "--preset", "mix-tiny", "--vocab-size", "64", "--d-model", "16",
            "--n-layers", "1", "--seq-len", "32", "--batch-size", "4", "--max-steps", "2", "--warmup", "1",
            "--device", "cpu", "--no-progress", "--eval-every", "0", "--tokens-npy", str(train),
            "--eval-tokens-npy", str(train), "--out", str(tmp / "out")]
    assert main(args) == 0
    return tmp / "out" / "last.safetensors"


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    """The command encodes the prompt with the GPT-2 tokenizer of ../shared/data (or $MUSE_TOKENIZER_DIR)."""
    path = resolve_tokenizer_dir()
    if path is None:
        pytest.fail("shared data missing: no GPT-2 tokenizer in ../shared/data/gpt2-tokenizer or $MUSE_TOKENIZER_DIR")
    return path


def _cli(checkpoint, *extra):
    return ["generate", str(checkpoint), "--device", "cpu", "--offline", *extra]


def test_cli_streams_text_and_greedy_repeats(checkpoint, gpt2_tokenizer, capsys):
    # "A" is GPT-2 token 32, inside the checkpoint's 64-token vocabulary
    args = _cli(checkpoint, "--prompt", "A", "--max-new-tokens", "12", "--temperature", "0")
    assert main(args) == 0
    first = capsys.readouterr()
    assert first.out.startswith("A") and len(first.out.strip()) > 1
    assert first.err.startswith("muse generate: path step, compiled False") and len(first.err.splitlines()) == 1
    assert main(args) == 0
    assert capsys.readouterr().out == first.out
    assert main([*args, "--fast"]) == 0  # the static step (no graph on CPU): the same greedy text
    fast = capsys.readouterr()
    assert fast.out == first.out and fast.err.startswith("muse generate: path decode_step, compiled False")
    assert main(_cli(checkpoint, "--prompt", "A", "--max-new-tokens", "5", "--top-k", "3", "--seed", "7")) == 0
    assert main(_cli(checkpoint, "--prompt", "A", "--max-new-tokens", "5", "--top-p", "0.9", "--seed", "7")) == 0


@pytest.mark.parametrize(("extra", "needle"), [
    (["--prompt", "A", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["--prompt", "A", "--max-new-tokens", "4", "--temperature", "-1"], "--temperature"),
    (["--prompt", "A", "--max-new-tokens", "4", "--top-k", "0"], "--top-k"),
    (["--prompt", "A", "--max-new-tokens", "4", "--top-p", "0"], "--top-p"),
    (["--prompt", "A", "--max-new-tokens", "4", "--top-p", "1.2"], "--top-p"),
    (["--prompt", "A", "--max-new-tokens", "4", "--seed", "-3"], "--seed"),
    (["--prompt", "", "--max-new-tokens", "4"], "--prompt"),
    (["--prompt", " the", "--max-new-tokens", "4"], "vocab_size=64"),
    (["--prompt", "A", "--max-new-tokens", "500"], "max_seq_len"),
    (["--prompt", "A", "--max-new-tokens", "x"], "--max-new-tokens"),
])
def test_cli_bad_arguments_give_one_line(checkpoint, gpt2_tokenizer, capsys, extra, needle):
    try:
        code = main(_cli(checkpoint, *extra))
    except SystemExit as exc:  # argparse's own usage errors exit from inside parse_args
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("muse generate: error:") and needle in err, err


def test_cli_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(_cli(tmp_path / "none.safetensors", "--prompt", "A", "--max-new-tokens", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("muse generate: error:"), err
