"""The fast decoding path of ``muse.train.generate`` (:class:`StaticDecoder` over Stage 1's
``decode_step``): the same tokens as the eager ``step`` loop, the fallbacks, bad arguments
refused by name; on CUDA the replayed CUDA graph (compiled or not) against the eager loop."""

from __future__ import annotations

import pytest
import torch
from _helpers import cuda_test

from muse.models import build_model
from muse.train.generate import StaticDecoder, generate

VOCAB = 97
PROMPT = [[3, 14, 15, 9, 2]]


def _model(name: str = "stage1", preset: str = "mix-tiny", device: str = "cpu", **kw):
    torch.manual_seed(0)
    return build_model(name, preset, vocab_size=VOCAB, device=device, **kw).eval()


def _run(model, n: int, device: str = "cpu", **kw) -> tuple[torch.Tensor, dict]:
    info: dict = {}
    prompt = torch.tensor(PROMPT, device=device)
    tokens = torch.stack(list(generate(model, prompt, n, info=info, **kw)), dim=1)
    return tokens, info


@pytest.mark.parametrize("preset", ["tiny", "mix-tiny"])
def test_fast_path_on_cpu_gives_the_eager_tokens(preset):
    model = _model(preset=preset)
    eager, info = _run(model, 20, temperature=0.0, fast=False)
    assert info == {"path": "step", "compiled": False, "setup_s": 0.0}
    fast, info = _run(model, 20, temperature=0.0, fast=True)
    assert info["path"] == "decode_step" and info["compiled"] is False and info["setup_s"] >= 0.0
    assert fast.shape == (1, 20) and torch.equal(fast, eager)
    default, info = _run(model, 20, temperature=0.0)
    assert info["path"] == "step" and torch.equal(default, eager)  # CPU default: the eager loop
    # seeded sampling draws the same tokens from the same logits
    a, _ = _run(model, 20, fast=False, top_k=5, generator=torch.Generator().manual_seed(3))
    b, _ = _run(model, 20, fast=True, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, eager)
    a, _ = _run(model, 20, fast=False, top_p=0.9, generator=torch.Generator().manual_seed(4))
    b, _ = _run(model, 20, fast=True, top_p=0.9, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_fast_path_edges_and_fallbacks():
    model = _model()
    one, info = _run(model, 1, temperature=0.0, fast=True)
    assert one.shape == (1, 1) and info["path"] == "step"  # only the prefill ran
    assert list(generate(model, torch.tensor(PROMPT), 0, fast=True)) == []
    gpt = _model("gpt", "tiny")
    tokens, info = _run(gpt, 4, temperature=0.0)  # no decode_step: the step loop, silently by default
    assert tokens.shape == (1, 4) and info["path"] == "step"
    # the cap is checked before any work, the fast path included
    with pytest.raises(ValueError, match="max_seq_len"):
        next(generate(model, torch.tensor(PROMPT), model.max_seq_len, fast=True))


@pytest.mark.parametrize(("kwargs", "exc", "needle"), [
    (dict(fast="yes"), TypeError, "fast"),
    (dict(compile=1), TypeError, "compile"),
    (dict(info=[]), TypeError, "info"),
])
def test_generate_refuses_bad_fast_arguments(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        next(generate(_model(), torch.tensor(PROMPT), 3, **kwargs))


def test_fast_true_needs_a_static_step():
    with pytest.raises(ValueError, match="fast=True needs a model with decode_step"):
        next(generate(_model("gpt", "tiny"), torch.tensor(PROMPT), 3, fast=True))


def test_static_decoder_compiled_equals_the_step_loop():
    """The compiled step (aot_eager on CPU: dynamo + AOTAutograd, fullgraph) after a warm-up that
    leaves the buffers as the prefill left them."""
    torch._dynamo.reset()
    model = _model()
    ids = torch.randint(0, VOCAB, (2, 14), generator=torch.Generator().manual_seed(2))
    _, cache = model.step(ids[:, :4])
    decoder = StaticDecoder(model, cache, compile=True, backend="aot_eager")
    assert decoder.path == "decode_step" and decoder.compiled and decoder.setup_seconds > 0
    assert int(decoder.state.position) == 4  # the warm-up was undone
    with torch._dynamo.config.patch(error_on_recompile=True):  # a capture must not recompile
        for t in range(4, 14):
            want, cache = model.step(ids[:, t:t + 1], cache)
            assert torch.equal(decoder(ids[:, t:t + 1]), want[:, -1]), f"token {t}"


def test_static_decoder_refuses_bad_arguments():
    model = _model()
    _, cache = model.step(torch.tensor(PROMPT))
    with pytest.raises(ValueError, match="graph=True needs a model on CUDA"):
        StaticDecoder(model, cache, graph=True)
    with pytest.raises(ValueError, match="backend"):
        StaticDecoder(model, cache, compile=True, backend="fast")
    with pytest.raises(TypeError, match="compile"):
        StaticDecoder(model, cache, compile="yes")
    with pytest.raises(ValueError, match="warmup"):
        StaticDecoder(model, cache, warmup=0)
    with pytest.raises(TypeError, match="cache must be the cache model.step returned"):
        StaticDecoder(model, "cache")
    gpt = _model("gpt", "tiny")
    with pytest.raises(ValueError, match="decode_step"):
        StaticDecoder(gpt, gpt.step(torch.tensor(PROMPT))[1])
    decoder = StaticDecoder(model, cache)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(1, 1\)"):
        decoder(torch.tensor([1]))
    with pytest.raises(TypeError, match="integer"):
        decoder(torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="token id 97"):
        decoder(torch.tensor([[VOCAB]]))


# ----------------------------------------------------------------------------- CUDA
@cuda_test
@pytest.mark.parametrize("preset", ["tiny", "mix-tiny"])
def test_cuda_graph_replay_gives_the_eager_tokens_in_constant_memory(preset):
    """The captured graph (no compile) launches the kernels of the eager step: the same greedy tokens,
    and the memory held after 10 % of the tokens equals that after all of them."""
    model = _model(preset=preset, device="cuda", max_seq_len=256)
    eager, info = _run(model, 200, "cuda", temperature=0.0, fast=False)
    assert info["path"] == "step"
    info: dict = {}
    mem = []
    gen = generate(model, torch.tensor(PROMPT, device="cuda"), 200, temperature=0.0, fast=True, compile=False,
                   info=info)
    tokens = []
    for i, token in enumerate(gen):
        tokens.append(token.cpu())  # kept on the host: a list of CUDA tensors would grow the memory
        if i + 1 in (20, 200):
            torch.cuda.synchronize()
            mem.append(torch.cuda.memory_allocated())
    assert info["path"] == "cuda_graph" and info["compiled"] is False
    assert torch.equal(torch.stack(tokens, dim=1), eager.cpu())
    assert mem[0] == mem[1], mem


@cuda_test
@pytest.mark.parametrize("preset", ["tiny", "mix-tiny"])
def test_cuda_graph_compiled_step_follows_the_eager_logits(preset):
    """Teacher-forced: the compiled, replayed step against ``step`` on the same ids, within the
    incremental test's bound (4 fp16 ulps of the largest logit; compiling reorders fp32 work)."""
    torch._dynamo.reset()
    model = _model(preset=preset, device="cuda")
    ids = torch.randint(0, VOCAB, (2, 40), device="cuda")
    _, cache = model.step(ids[:, :8])
    decoder = StaticDecoder(model, cache, compile=True)
    assert decoder.path == "cuda_graph" and decoder.compiled
    for t in range(8, 40):
        want, cache = model.step(ids[:, t:t + 1], cache)
        got = decoder(ids[:, t:t + 1]).float()
        tol = 4 * torch.finfo(torch.float16).eps * want.float().abs().max().item()
        assert (got - want[:, -1].float()).abs().max().item() <= tol, f"token {t}"
    assert int(decoder.state.position) == 40
