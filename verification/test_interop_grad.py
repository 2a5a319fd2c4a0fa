"""Interop and gradients: exact planar <-> native round trips, Wirtinger gradients vs complex128,
gradcheck/gradgradcheck in float64 for every op, layer and custom autograd function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

import muse.complex as C
from muse.init import ZetaEmbedding
from muse.models.stage1 import Stage1Block
from muse.nn import (
    ComplexDropout,
    ComplexEmbedding,
    ComplexLayerNorm,
    ComplexLinear,
    ModReLU,
    RealLinear,
)
from verification import strategies as vs
from verification.checks import check_close
from verification.harness import ct
from verification.plugin import examples
from verification.record import record_property

SEEDS = st.integers(0, 2**32 - 1)


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Bitwise equal after viewing as integers; any nan equals any nan."""
    x, y = x.cpu(), y.cpu()
    nan = torch.isnan(x) & torch.isnan(y)
    ints = {torch.float16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}
    return bool(torch.all(nan | (x.view(ints[x.dtype]) == y.view(ints[y.dtype]))))


# ------------------------------------------------------------------ round trips
@given(z=vs.complex_arrays(band="nonfinite"))
def test_planar_native_round_trips_are_exact(device, z):
    """fp16 planes -> complex64 -> fp16 planes, and via complex32, bit for bit (signed zeros kept)."""
    w = ct(z, device)
    c64 = C.to_complex(w)
    assert c64.dtype == torch.complex64
    assert _same(c64.real, w.real.float()) and _same(c64.imag, w.imag.float())
    assert _same(C.from_complex(c64, torch.float16).planes, w.planes)
    c32 = C.to_complex(w, torch.complex32)
    assert _same(C.from_complex(c32, torch.float16).planes, w.planes)
    w64 = w.double()
    assert _same(C.from_complex(C.to_complex(w64), torch.float64).planes, w64.planes)


# --------------------------------------------------------- Wirtinger gradients
def test_wirtinger_convention_example():
    """L = |z|^2 at 1 + 2i: PyTorch's z.grad is dL/dRe + i dL/dIm = 2 + 4i, and so are the planar grads."""
    z = torch.tensor(1 + 2j, dtype=torch.complex128, requires_grad=True)
    (z.abs() ** 2).backward()
    assert z.grad == 2 + 4j
    p = C.ComplexTensor(torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True))
    C.abs2(p).backward()
    assert p.planes.grad.tolist() == [2.0, 4.0]


def _rand(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    return rng.standard_normal((2, *shape)) * scale


def _away_from_zero(z: np.ndarray, rmin: float = 0.25) -> np.ndarray:
    """Push |z| >= rmin (keeps the phase) so |z| is differentiable."""
    r = np.hypot(z[0], z[1])
    return np.where(r < rmin, z * (rmin / np.maximum(r, 1e-300)) + (r == 0) * rmin, z)


def _native_ln(z, w, b, eps):
    mu = z.mean(-1, keepdim=True)
    c = z - mu
    var = (c.real**2 + c.imag**2).mean(-1, keepdim=True)
    return c * torch.rsqrt(var + eps) * w + b


def _native_modrelu(z, b):
    r = z.abs()
    return torch.where(r + b > 0, z * ((r + b) / r), torch.zeros_like(z))


CASES = {
    # name: (input builder, planar function, native complex128 function); inputs are float64
    # numpy planes (complex, names starting with "z") or real arrays.
    "mul": (lambda g: {"za": _rand(g, 3, 4), "zb": _rand(g, 3, 4)}, C.mul, torch.mul),
    "div": (lambda g: {"za": _rand(g, 3, 4), "zb": _away_from_zero(_rand(g, 3, 4), 0.5)}, C.div, torch.div),
    "abs": (lambda g: {"z": _away_from_zero(_rand(g, 5))}, C.abs, torch.abs),
    "exp": (lambda g: {"z": _rand(g, 2, 3)}, C.exp, torch.exp),
    "matmul": (lambda g: {"za": _rand(g, 3, 5), "zb": _rand(g, 5, 2)}, C.matmul, torch.matmul),
    "linear": (lambda g: {"zx": _rand(g, 4, 5), "zw": _rand(g, 3, 5), "zb": _rand(g, 3)},
               C.linear, lambda x, w, b: x @ w.T + b),
    "layer_norm": (lambda g: {"z": _rand(g, 3, 6, scale=2.0), "weight": 1 + 0.3 * g.standard_normal(6),
                              "bias": g.standard_normal(6)},
                   lambda z, w, b: C.layer_norm(z, w, b, 1e-5), lambda z, w, b: _native_ln(z, w, b, 1e-5)),
    "modrelu": (lambda g: {"z": _away_from_zero(_rand(g, 4, 6), 0.5), "bias": 0.2 * g.standard_normal(6)},
                C.modrelu, _native_modrelu),
}


def _kink_free(name: str, inputs: dict) -> bool:
    """modReLU is not differentiable where |z| + b = 0: require a margin."""
    if name != "modrelu":
        return True
    r = np.hypot(inputs["z"][0], inputs["z"][1])
    return bool(np.all(np.abs(r + inputs["bias"]) > 1e-3))


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=examples(0.2))
@given(seed=SEEDS)
def test_planar_gradients_equal_complex128_gradients(device, name, seed):
    """Planar grads (float64 planes) == PyTorch's complex128 grads (conjugate Wirtinger), inputs alike."""
    build, planar_fn, native_fn = CASES[name]
    inputs = build(np.random.default_rng(seed))
    if not _kink_free(name, inputs):
        return
    planar, native = [], []
    for key, v in inputs.items():
        t = torch.tensor(v, dtype=torch.float64, device=device, requires_grad=True)
        if key.startswith("z"):
            planar.append(C.ComplexTensor(t))
            native.append(torch.complex(t[0], t[1]).detach().requires_grad_(True))
        else:
            planar.append(t)
            native.append(t.detach().clone().requires_grad_(True))
    out_p = planar_fn(*planar)
    out_n = native_fn(*native)
    g = torch.randn(out_n.shape, dtype=torch.complex128, device=device, generator=torch.Generator(device).manual_seed(seed % 2**31))
    if isinstance(out_p, C.ComplexTensor):
        (out_p.planes * torch.stack((g.real, g.imag))).sum().backward()
        (g.conj() * out_n).real.sum().backward()
    else:
        (out_p * g.real).sum().backward()
        (out_n * g.real).sum().backward()
    for key, p, n in zip(inputs, planar, native, strict=True):
        got = p.planes.grad if isinstance(p, C.ComplexTensor) else p.grad
        want = torch.stack((n.grad.real, n.grad.imag)) if n.is_complex() else n.grad
        scale = float(want.abs().max())
        check_close(f"wirtinger_grad:{name}:{key}", device, got.cpu().numpy(), want.cpu().numpy(),
                    rtol=1e-9, atol=1e-12 * max(scale, 1.0))


# ------------------------------------------------------ gradcheck / gradgradcheck
def _t(rng: np.random.Generator, *shape, device: str, scale: float = 1.0) -> torch.Tensor:
    return torch.tensor(rng.standard_normal(shape) * scale, dtype=torch.float64, device=device,
                        requires_grad=True)


def _planes_fn(fn):
    """Wrap a ComplexTensor-valued function of planes tensors into a tensor-valued one."""

    def wrapped(*tensors):
        out = fn(*tensors)
        return out.planes if isinstance(out, C.ComplexTensor) else out

    return wrapped


def _ops_cases(rng, device):
    """name -> (function of float64 tensors, inputs) for every functional op with a gradient."""
    ct_ = C.ComplexTensor

    def z(*shape, rmin=None, scale=1.0):
        v = rng.standard_normal((2, *shape)) * scale
        if rmin is not None:
            v = _away_from_zero(v, rmin)
        return torch.tensor(v, dtype=torch.float64, device=device, requires_grad=True)

    bias = _t(rng, 4, device=device, scale=0.2)
    zm = z(3, 4, rmin=0.5)
    ok = (torch.hypot(zm[0], zm[1]) + bias).abs().min() > 1e-2
    gen = lambda: torch.Generator(device).manual_seed(7)  # noqa: E731 - one mask per call
    ids = torch.tensor([[0, 2, 1]], device=device)
    return {
        "add": (lambda a, b: C.add(ct_(a), ct_(b)), (z(3), z(3))),
        "sub": (lambda a, b: C.sub(ct_(a), ct_(b)), (z(3), z(3))),
        "mul": (lambda a, b: C.mul(ct_(a), ct_(b)), (z(3), z(3))),
        "mul_real": (lambda a, x: C.mul(ct_(a), x), (z(3), _t(rng, 3, device=device))),
        "div": (lambda a, b: C.div(ct_(a), ct_(b)), (z(3), z(3, rmin=0.5))),
        "neg": (lambda a: C.neg(ct_(a)), (z(3),)),
        "conj": (lambda a: C.conj(ct_(a)), (z(3),)),
        "abs": (lambda a: C.abs(ct_(a)), (z(4, rmin=0.3),)),
        "abs2": (lambda a: C.abs2(ct_(a)), (z(4),)),
        "angle": (lambda a: C.angle(ct_(a)), (z(4, rmin=0.3),)),
        "exp": (lambda a: C.exp(ct_(a)), (z(4, scale=0.5),)),
        "polar": (C.polar, (_t(rng, 3, device=device), _t(rng, 3, device=device))),
        "sum": (lambda a: C.sum(ct_(a), 1), (z(2, 3),)),
        "mean": (lambda a: C.mean(ct_(a)), (z(2, 3),)),
        "cat": (lambda a, b: C.cat([ct_(a), ct_(b)], 0), (z(2), z(3))),
        "stack": (lambda a, b: C.stack([ct_(a), ct_(b)], 1), (z(3), z(3))),
        "matmul": (lambda a, b: C.matmul(ct_(a), ct_(b)), (z(2, 3), z(3, 2))),
        "matmul_real": (lambda a, b: C.matmul(ct_(a), b), (z(2, 3), _t(rng, 3, 2, device=device))),
        "linear": (lambda x, w, b: C.linear(ct_(x), ct_(w), ct_(b)), (z(2, 3), z(4, 3), z(4))),
        "layer_norm": (lambda a, w, b: C.layer_norm(ct_(a), w, b), (z(2, 5, scale=2.0),
                       _t(rng, 5, device=device), _t(rng, 5, device=device))),
        "layer_norm_plain": (lambda a: C.layer_norm(ct_(a)), (z(3, 4),)),
        "modrelu": ((lambda a, b: C.modrelu(ct_(a), b)) if ok else None, (zm, bias)),
        "modrelu_scalar_bias": (lambda a, b: C.modrelu(ct_(a), b), (z(5, rmin=1.0), torch.tensor(
            -0.3, dtype=torch.float64, device=device, requires_grad=True))),
        "dropout": (lambda a: C.dropout(ct_(a), 0.4, True, generator=gen()), (z(8),)),
        "embedding": (lambda w, p: C.embedding(ids, ct_(w), p, 0.3), (z(3, 4), _t(rng, 3, 4, device=device))),
        "embedding_real_table": (lambda w, p: C.embedding(ids, w, p, 0.3), (_t(rng, 3, 4, device=device),
                                                                             _t(rng, 3, 4, device=device))),
        "to_complex": (lambda a: C.to_complex(ct_(a)), (z(3),)),
        "from_complex": (lambda a: C.from_complex(a, torch.float64),
                         (torch.randn(3, dtype=torch.complex128, device=device, requires_grad=True),)),
        "from_real": (lambda x: C.from_real(x), (_t(rng, 3, device=device),)),
    }


OPS = sorted(_ops_cases(np.random.default_rng(0), "cpu"))


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=examples(0.03, minimum=3))
@given(seed=SEEDS)
def test_gradcheck_ops(device, name, seed):
    """torch.autograd.gradcheck and gradgradcheck in float64 for every functional op."""
    fn, inputs = _ops_cases(np.random.default_rng(seed), device)[name]
    if fn is None:
        return  # drawn too close to modReLU's kink |z| = -b
    f = _planes_fn(fn)
    ok1 = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    ok2 = torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    record_property(f"gradcheck:{name}", device, bool(ok1 and ok2))


def _modules(device: str):
    """name -> (module in float64, example input builder) for every layer."""
    f64 = torch.float64
    torch.manual_seed(0)
    block = Stage1Block(6, dropout=0.0, dtype=f64, device=device)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, ModReLU):
                m.bias.fill_(-0.1)
    emb = ComplexEmbedding(11, 4, 8, dropout=0.0, initial_phase=0.5, dtype=f64, device=device)
    zin = lambda *s: C.ComplexTensor(torch.randn(2, *s, dtype=f64, device=device) + 0.1)  # noqa: E731
    return {
        "ComplexLinear": (ComplexLinear(5, 3, dtype=f64, device=device), lambda: zin(2, 5)),
        "ComplexLayerNorm": (ComplexLayerNorm(5, dtype=f64, device=device), lambda: zin(3, 5)),
        "ModReLU": (ModReLU(4, dtype=f64, device=device), lambda: zin(3, 4)),
        "ComplexDropout": (ComplexDropout(0.3), lambda: zin(6)),
        "ComplexDropout(independent)": (ComplexDropout(0.3, mode="independent"), lambda: zin(6)),
        "RealLinear": (RealLinear(4, 3, dtype=f64, device=device), lambda: torch.randn(2, 4, dtype=f64, device=device)),
        "ComplexEmbedding": (emb, lambda: torch.tensor([[1, 3, 5]], device=device)),
        "ComplexEmbedding(real table)": (ComplexEmbedding(11, 4, 8, dropout=0.0, initial_phase=0.5, dtype=f64,
                                                          device=device, table="real"),
                                         lambda: torch.tensor([[1, 3, 5]], device=device)),
        "ZetaEmbedding": (ZetaEmbedding(8, 4, trainable=True, dtype=f64, device=device),
                          lambda: torch.tensor([0, 3, 7], device=device)),
        "Stage1Block": (block, lambda: zin(2, 6)),
    }


@pytest.mark.parametrize("name", sorted(_modules("cpu")))
def test_gradcheck_modules(device, name):
    """gradcheck/gradgradcheck of each layer w.r.t. its parameters and its (complex) input."""
    module, make_input = _modules(device)[name]
    module.train()
    x = make_input()
    params = {k: p.detach().clone().requires_grad_(True) for k, p in module.named_parameters()}
    keys = list(params)
    takes_planes = isinstance(x, C.ComplexTensor)
    x_in = x.planes.detach().clone().requires_grad_(True) if takes_planes else x
    if name == "ModReLU":
        with torch.no_grad():
            params["bias"].fill_(-0.05)

    def f(*tensors):
        torch.manual_seed(3)  # the same dropout mask on every call
        ps = dict(zip(keys, tensors[: len(keys)], strict=True))
        arg = C.ComplexTensor(tensors[-1]) if takes_planes else x_in
        out = functional_call(module, ps, (arg,))
        return out.planes if isinstance(out, C.ComplexTensor) else out

    inputs = tuple(params.values()) + ((x_in,) if takes_planes else ())
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_cross_entropy_on_fp16_logits_backward_is_fp16():
    """The model recipe: fp32 cross-entropy on fp16 logits gives fp16 gradients to fp16 logits."""
    logits = torch.randn(4, 7, dtype=torch.float16, requires_grad=True)
    F.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3])).backward()
    assert logits.grad.dtype == torch.float16 and torch.isfinite(logits.grad).all()
