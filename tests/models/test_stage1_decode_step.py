"""Stage 1's static decoding step (``decode_buffers`` / ``decode_step``): the logits of ``step`` and
of one full forward, the state updated in place, a compile without graph breaks, and bad input
refused by name.  The value checks use a device assert where a host sync is forbidden."""

from __future__ import annotations

import pytest
import torch

import muse._checks as checks
import muse.init.zeta as zeta
from muse.models import build_model
from muse.models.stage1 import Stage1DecodeState

VOCAB = 97


def _model(preset: str):
    if preset == "mix-tiny+conv":  # the recurrence's convolution window rides in the state
        torch.manual_seed(0)
        return build_model("stage1", "mix-tiny", vocab_size=VOCAB, conv_kernel=4).eval()
    if preset == "mix-tiny+input-decay":  # the decay per token (Griffin's RG-LRU form)
        torch.manual_seed(0)
        return build_model("stage1", "mix-tiny", vocab_size=VOCAB, decay="input").eval()
    if preset == "mix-tiny+rotation":  # a complex lambda under the per-token power: the state turns per token
        torch.manual_seed(0)
        return build_model("stage1", "mix-tiny", vocab_size=VOCAB, lambda_kind="complex").eval()
    if preset == "mix-tiny+tied":  # the head's weight is the token table's real plane
        torch.manual_seed(0)
        return build_model("stage1", "mix-tiny", vocab_size=VOCAB, tie_head=True).eval()
    if preset in ("mix-tiny+pointer", "mix-tiny+sentinel"):  # the copy path: the window in static buffers
        torch.manual_seed(0)
        mode = "sentinel" if preset.endswith("sentinel") else "cache"
        return build_model("stage1", "mix-tiny", vocab_size=VOCAB, pointer_dim=8, pointer_mode=mode).eval()
    if preset in ("mix-tiny+retention", "mix-tiny+hybrid"):  # the matrix state of ComplexRetention
        torch.manual_seed(0)
        return build_model("stage1", "mix-tiny", vocab_size=VOCAB, mixer=preset.partition("+")[2]).eval()
    torch.manual_seed(0)
    return build_model("stage1", preset, vocab_size=VOCAB).eval()


def _ids(b: int = 2, s: int = 25) -> torch.Tensor:
    return torch.randint(0, VOCAB, (b, s), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("preset", ["tiny", "mix-tiny", "mix-tiny+conv", "mix-tiny+tied", "mix-tiny+retention",
                                    "mix-tiny+hybrid", "mix-tiny+input-decay", "mix-tiny+pointer", "mix-tiny+sentinel",
                                    "mix-tiny+rotation"])
def test_decode_step_equals_step_and_the_full_forward(preset):
    model = _model(preset)
    ids = _ids()
    with torch.no_grad():
        full = model(ids).float()  # (B, S, V)
    _, cache = model.step(ids[:, :5])  # the prompt, then 20 tokens one at a time
    state = model.decode_buffers(2, cache)
    planes = [s.planes for s in state.layers if s is not None]
    assert len(planes) == (2 if preset.startswith("mix-tiny") else 0)
    for t in range(5, ids.shape[1]):
        want, cache = model.step(ids[:, t:t + 1], cache)
        got = model.decode_step(ids[:, t:t + 1].clone(), state)
        assert got.shape == (2, VOCAB)
        if model.pointer is None:
            assert torch.equal(got, want[:, -1]), f"token {t}"  # one shared body: bit for bit
        else:  # the window's softmax runs over max_seq_len masked columns instead of t: another sum order
            assert (got - want[:, -1]).abs().max().item() <= 1e-5, f"token {t}"
        # the incremental test's bound against the full forward (4 fp16 ulps of the largest logit)
        tol = 4 * torch.finfo(torch.float16).eps * full.abs().max().item()
        assert (got.float() - full[:, t]).abs().max().item() <= tol
    assert int(state.position) == ids.shape[1] == cache.length
    # the buffers are updated in place: the same storage, holding step's final state
    assert all(a is b for a, b in zip(planes, [s.planes for s in state.layers if s is not None], strict=True))
    if model.pointer is not None:
        inner, n = cache.inner, cache.length
        assert torch.equal(state.pointer_ids[:, :n], cache.ids)
        assert (state.pointer_keys[:, :n] - cache.keys).abs().max().item() <= 1e-6
        cache = inner
    for buf, ref in zip(state.layers, cache.layers, strict=True):
        assert (buf is None) == (ref is None)
        if buf is not None:
            assert torch.equal(buf.planes, ref.planes)


def test_decode_buffers_from_none_start_at_zero_like_step():
    model = _model("mix-tiny")
    ids = _ids(1, 6)
    state = model.decode_buffers(1)
    assert int(state.position) == 0 and all(torch.count_nonzero(s.planes) == 0 for s in state.layers)
    logits, cache = model.step(ids[:, :1])
    assert torch.equal(model.decode_step(ids[:, :1].clone(), state), logits[:, -1])
    for t in range(1, 6):
        want, cache = model.step(ids[:, t:t + 1], cache)
        assert torch.equal(model.decode_step(ids[:, t:t + 1].clone(), state), want[:, -1])


@pytest.mark.parametrize("preset", ["tiny", "mix-tiny", "mix-tiny+tied", "mix-tiny+hybrid", "mix-tiny+input-decay",
                                    "mix-tiny+pointer", "mix-tiny+rotation"])
def test_decode_step_compiles_fullgraph_with_in_place_state(preset):
    """aot_eager traces with dynamo + AOTAutograd (a graph break or host sync would fail fullgraph)."""
    torch._dynamo.reset()
    model = _model(preset)
    ids = _ids(1, 12)
    _, cache = model.step(ids[:, :4])
    state = model.decode_buffers(1, cache)
    buf = torch.zeros(1, 1, dtype=torch.long)
    compiled = torch.compile(lambda: model.decode_step(buf, state), fullgraph=True, backend="aot_eager")
    for t in range(4, 12):
        want, cache = model.step(ids[:, t:t + 1], cache)
        buf.copy_(ids[:, t:t + 1])
        got = compiled()
        assert torch.equal(got, want[:, -1]) if model.pointer is None else torch.allclose(got, want[:, -1], atol=1e-5)
    assert int(state.position) == 12


def test_decode_step_refuses_bad_input_by_name():
    model = _model("mix-tiny")
    _, cache = model.step(torch.tensor([[1, 2]]))
    state = model.decode_buffers(1, cache)
    with pytest.raises(TypeError, match="state"):
        model.decode_step(torch.tensor([[1]]), cache)
    with pytest.raises(TypeError, match="input_ids"):
        model.decode_step([[1]], state)
    with pytest.raises(TypeError, match="input_ids must be an int64"):
        model.decode_step(torch.tensor([[1]], dtype=torch.int32), state)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(1, 1\)"):
        model.decode_step(torch.tensor([[1, 2]]), state)
    with pytest.raises(ValueError, match="input_ids contains token id 97"):
        model.decode_step(torch.tensor([[VOCAB]]), state)
    with pytest.raises(ValueError, match="state has 1 layers"):
        model.decode_step(torch.tensor([[1]]), Stage1DecodeState(state.layers[:1], state.position, 1))
    assert int(state.position) == 2  # nothing moved on
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model.decode_buffers(0)
    with pytest.raises(TypeError, match="batch_size"):
        model.decode_buffers(1.0)
    with pytest.raises(ValueError, match="cache holds batch size 1"):
        model.decode_buffers(2, cache)
    with pytest.raises(TypeError, match="cache"):
        model.decode_buffers(1, "cache")
    full = model.decode_buffers(1)
    full.position.fill_(model.max_seq_len)
    with pytest.raises(ValueError, match="positions must be in"):
        model.decode_step(torch.tensor([[1]]), full)


def test_host_sync_forbidden_outside_compile_and_capture():
    x = torch.zeros(3, dtype=torch.long)
    assert checks.host_sync_forbidden(x) is False  # CPU eager: the checks may read values
    seen = []

    def probe(t):
        seen.append(checks.host_sync_forbidden(t))
        return t + 1

    torch._dynamo.reset()
    torch.compile(probe, backend="eager", fullgraph=True)(x)
    assert seen == [True]  # traced under torch.compile


def test_range_checks_use_a_device_assert_where_a_sync_is_forbidden(monkeypatch):
    """With the sync forbidden (as during a CUDA graph capture) the checks read no value on the
    host: torch._assert_async raises RuntimeError on CPU, where eager raises ValueError."""
    ids = torch.tensor([[1, VOCAB]])
    with pytest.raises(ValueError, match="token id 97"):
        checks.check_token_range("ids", ids, VOCAB)
    monkeypatch.setattr(checks, "host_sync_forbidden", lambda t: True)
    monkeypatch.setattr(zeta, "host_sync_forbidden", lambda t: True)
    monkeypatch.setattr(torch.Tensor, "__int__", lambda self: pytest.fail("host read of a tensor value"))
    checks.check_token_range("ids", torch.tensor([[1, 2]]), VOCAB)
    with pytest.raises(RuntimeError, match="ids contains a token id outside"):
        checks.check_token_range("ids", ids, VOCAB)
    table = zeta.ZetaEmbedding(8, 4)
    assert table(torch.tensor([0, 7])).shape == (2, 4)
    with pytest.raises(RuntimeError, match=r"positions outside \[0, 8\)"):
        table(torch.tensor([8]))
