"""Where the time goes on CUDA: the complex linear, the fused loss, compiled Stage 1, Phase 2, decoding,
compiled inference and training of Stage 1 beside the GPT, the head GEMM's forms.

    python scripts/profile_gpu.py --out runs/profile [--sections linear,loss,compiled,phase2,decode,infer,train,copies,head,eager]

Each section writes ``<out>/<section>.txt`` (timings and torch.profiler tables). A diagnostic
script for deciding what to optimise; the numbers that go into docs come from
``muse bench speed`` / ``muse bench stage1``.
"""

from __future__ import annotations

import argparse
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import muse.complex as C
from muse.models import build_model
from muse.train.loss import linear_cross_entropy, lm_loss, model_loss

DEV = torch.device("cuda")
KEEP_LOGITS = False  # --keep-logits: the train section's losses keep their chunks' logits (both opaque)
HALF_WEIGHTS = False  # --half-weights: the infer section's GPT from bf16 weights without autocast


def bench(fn, n: int = 20) -> float:
    """Median ms of fn() (CUDA events), after 3 warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def cpu_time(fn, n: int = 20) -> float:
    """Mean ms of host time per call without synchronising (launch cost when GPU-idle)."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e3


def table(fn, n: int = 5, rows: int = 25, sort: str = "cuda_time_total") -> str:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=70)


def sec_linear(w):
    n, d = 4096, 512
    x = C.ComplexTensor(torch.randn(2, n, d, device=DEV).half())
    wc = C.ComplexTensor((torch.randn(2, d, d, device=DEV) / d**0.5).half())
    bc = C.ComplexTensor(torch.zeros(2, d, device=DEV).half())
    xr = torch.randn(n, 2 * d, device=DEV).half()
    wr = torch.randn(2 * d, 2 * d, device=DEV).half()
    w(f"C.linear eager: {bench(lambda: C.linear(x, wc, bc)):.4f} ms; host {cpu_time(lambda: C.linear(x, wc, bc)):.4f} ms")
    w(f"F.linear real (n, 2d) x (2d, 2d): {bench(lambda: F.linear(xr, wr)):.4f} ms")
    w(f"gemm_linear real: {bench(lambda: C.gemm_linear(xr, wr, None)):.4f} ms; "
      f"host {cpu_time(lambda: C.gemm_linear(xr, wr, None)):.4f} ms")

    def ctx():
        with C.fp32_accumulation(DEV):
            pass
    w(f"fp32_accumulation enter/exit host: {cpu_time(ctx, 200):.4f} ms")
    w(f"cat x planes: {bench(lambda: torch.cat((x.real, x.imag), -1)):.4f} ms")
    wre, wim = wc.real, wc.imag
    w(f"block weight: {bench(lambda: torch.cat((torch.cat((wre, -wim), 1), torch.cat((wim, wre), 1)), 0)):.4f} ms")
    y = torch.randn(n, 2 * d, device=DEV).half()
    w(f"unflatten movedim contiguous: {bench(lambda: y.unflatten(-1, (2, d)).movedim(-2, 0).contiguous()):.4f} ms")
    cl = torch.compile(lambda a, b, c: C.linear(a, b, c).planes, fullgraph=True)
    w(f"C.linear compiled: {bench(lambda: cl(x, wc, bc)):.4f} ms")
    w(table(lambda: C.linear(x, wc, bc), n=10, rows=15))
    xg = C.ComplexTensor(x.planes.clone().requires_grad_())
    wg = torch.nn.Parameter(wc.planes.clone())

    def fb():
        out = C.linear(xg, C.ComplexTensor(wg), bc)
        out.planes.float().sum().backward()
    w(f"C.linear fwd+bwd eager: {bench(fb):.4f} ms")
    w(table(fb, n=10, rows=15))


def sec_loss(w):
    torch.manual_seed(0)
    model = build_model("stage1", "seed", device=DEV)
    b, s = 4, 1024
    ids = torch.randint(0, 50257, (b, s + 1), device=DEV)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    with torch.no_grad():
        hid0 = model(inp, return_hidden=True)
    head = model.lm_head
    hid = hid0.detach().requires_grad_()

    def full():
        loss = lm_loss(head(hid), tgt)
        loss.backward()

    def fused(cs, vcs=None):
        def f():
            loss = linear_cross_entropy(hid, head.weight, tgt, head.bias, chunk_size=cs, impl="chunked")
            loss.backward()
        return f
    w(f"loss only (hidden given), B{b} S{s}, V 50257, fp16 weight {head.weight.dtype}")
    w(f"full logits: {bench(full):.3f} ms, host {cpu_time(full, 5):.3f} ms")
    for cs, vcs in ((None, None), (2048, None), (8192, None), (16384, None)):
        w(f"chunked chunk={cs}: {bench(fused(cs, vcs)):.3f} ms, "
          f"host {cpu_time(fused(cs, vcs), 5):.3f} ms")
    w(table(fused(None), n=3, rows=20))
    w(table(full, n=3, rows=15))

    def step(loss_kind, cs=None):
        def f():
            if loss_kind == "full":
                loss = lm_loss(model(inp), tgt)
            else:
                h = model(inp, return_hidden=True)
                loss = linear_cross_entropy(h, head.weight, tgt, head.bias, chunk_size=cs, impl="chunked")
            loss.backward()
        return f
    model.train()
    for kind, cs in (("full", None), ("fused", None), ("fused", 8192), ("fused", 16384)):
        f = step(kind, cs)
        w(f"eager model step {kind} chunk={cs}: {bench(f, 10):.3f} ms, host {cpu_time(f, 3):.3f} ms")


def sec_compiled(w):
    """Stage 1 seed B4 S1024 compiled: the model + chunked loss as one graph (as muse train runs it),
    and compiled inference; each also under mode="reduce-overhead" (CUDA graphs)."""
    from muse.train.loss import compile_model_loss

    torch.manual_seed(0)
    model = build_model("stage1", "seed", device=DEV)
    b, s = 4, 1024
    ids = torch.randint(0, 50257, (b, s + 1), device=DEV)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    for mode in ("default", "reduce-overhead"):
        model.train()
        if mode == "default":
            loss_fn = compile_model_loss(model)
        else:
            loss_fn = torch.compile(lambda i, t: model_loss(model, i, t), fullgraph=True, mode=mode)

        def train(loss_fn=loss_fn):
            loss_fn(inp, tgt).backward()
            model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        for _ in range(2):
            train()
        torch.cuda.synchronize()
        w(f"[{mode}] compile + 2 steps: {time.perf_counter() - t0:.1f} s")
        ms = bench(train, 10)
        w(f"[{mode}] compiled fwd+bwd (model + loss one graph): {ms:.3f} ms = {b * s / ms * 1e3:,.0f} tok/s; "
          f"host {cpu_time(train, 5):.3f} ms per call")
        if mode == "default":
            w(table(train, n=3, rows=40))
        model.eval()
        net = torch.compile(model, fullgraph=True, mode=None if mode == "default" else mode)

        def infer(net=net):
            with torch.no_grad():
                net(inp)
        infer()
        infer()
        ms = bench(infer, 10)
        w(f"[{mode}] compiled inference: {ms:.3f} ms = {b * s / ms * 1e3:,.0f} tok/s; host {cpu_time(infer, 5):.3f} ms")
        if mode == "default":
            w(table(infer, n=3, rows=25))


def sec_phase2(w):
    torch.manual_seed(0)
    model = build_model("phase2", "seed", device=DEV)
    ids = torch.randint(0, 50257, (4, 1025), device=DEV)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    model.train()

    def f():
        lm_loss(model(inp), tgt).backward()
    w(f"phase2 eager fwd+bwd: {bench(f, 5):.3f} ms, host {cpu_time(f, 2):.3f} ms")
    w(table(f, n=2, rows=35))
    w(table(f, n=2, rows=35, sort="cpu_time_total"))


def sec_eager(w):
    """Eager fwd+bwd (fused loss, kernels on) of the mix and seed Stage 1 at B4 S1024: GPU time against host
    time, launches per step, and the ops that cost the host most (is eager launch-bound, and on what?)."""
    for preset in ("mix", "seed"):
        _eager_one(w, preset)
        torch.cuda.empty_cache()


def _eager_one(w, preset: str) -> None:
    torch.manual_seed(0)
    model = build_model("stage1", preset, device=DEV)
    ids = torch.randint(0, 50257, (4, 1025), device=DEV)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    model.train()

    def f():
        model_loss(model, inp, tgt).backward()
    f()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        f()
        torch.cuda.synchronize()
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    w(f"stage1 {preset} eager fwd+bwd: {bench(f, 5):.3f} ms a step, host {cpu_time(f, 3):.3f} ms, "
      f"GPU kernels {gpu_us / 1e3:.3f} ms in {launches} launches")
    w(table(f, n=1, rows=40, sort="cpu_time_total"))
    w(table(f, n=1, rows=25, sort="self_cpu_time_total"))


def sec_decode(w):
    for preset in ("mix", "seed"):
        _decode_one(w, preset)
        torch.cuda.empty_cache()


def _decode_one(w, preset: str) -> None:
    from muse.train.generate import generate

    torch.manual_seed(0)
    model = build_model("stage1", preset, device=DEV).eval()
    prompt = torch.randint(0, 50257, (1, 16), device=DEV)
    with torch.no_grad():
        logits, cache = model.step(prompt, None)
        nxt = logits[:, -1].argmax(-1)[:, None]

        def eager_step():
            model.step(nxt, cache)
        w(f"{preset}: eager step {bench(eager_step, 20):.3f} ms; host {cpu_time(eager_step, 20):.3f} ms")
        w(table(eager_step, n=3, rows=12, sort="cpu_time_total"))
        t0 = time.perf_counter()
        n = 0
        for _ in generate(model, prompt, 200, temperature=0.0):
            n += 1
        torch.cuda.synchronize()
        w(f"{preset}: generate 200 tok/s {n / (time.perf_counter() - t0):.1f}")
        # prototype: the step without checks, captured in a CUDA graph
        emb = model.embedding
        pos_buf = torch.tensor([cache.length], device=DEV)
        ids_buf = nxt.clone()
        states = [None if s is None else C.ComplexTensor(s.planes.clone()) for s in cache.layers]

        def core():
            pos = emb.position.weight[pos_buf]  # (1, d)
            z = C.embedding(ids_buf, C.ComplexTensor(emb.weight), pos, emb.initial_phase)
            new = []
            for blk, st in zip(model.blocks, states, strict=True):
                z, st2 = blk.step(z, st)
                new.append(st2)
            out = model.lm_head(model.head_input(model.final_norm(z)))
            for st, st2 in zip(states, new, strict=True):
                if st is not None:
                    st.planes.copy_(st2.planes)
            pos_buf.add_(1)
            return out
        for label, fn in (("eager-core", core), ("compiled-core", torch.compile(core))):
            try:
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        fn()
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    out = fn()
                w(f"{preset} {label} graph replay: {bench(g.replay, 50):.4f} ms per token "
                  f"(host {cpu_time(g.replay, 50):.4f} ms); out {tuple(out.shape)}")
            except Exception:
                w(f"{preset} {label} graph: FAILED\n{traceback.format_exc()[-1500:]}")


def _side_by_side(w, label: str, make_step, mode: str, rows: int) -> None:
    """Stage 1 seed and the GPT reference (bf16 autocast, or bf16 weights under --half-weights), B4 S1024: for each,
    ``make_step(model, amp)`` built on the seed model in ``mode`` ("eval" or "train"), timed, with its kernel table."""
    b, s = 4, 1024
    for name in ("stage1", "gpt"):
        torch.manual_seed(0)
        model = build_model(name, "seed", device=DEV)
        model.train(mode == "train")
        amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=name == "gpt" and not HALF_WEIGHTS)
        if name == "gpt" and HALF_WEIGHTS:
            model.to(torch.bfloat16)
        step = make_step(name, model, amp)
        step()
        step()
        ms = bench(step, 10)
        w(f"[{name}] {label}: {ms:.3f} ms = {b * s / ms * 1e3:,.0f} tok/s")
        w(table(step, n=3, rows=rows))
        del model, step
        torch._dynamo.reset()


def sec_infer(w):
    """Compiled inference (default mode) of Stage 1 seed and the GPT reference, side by side."""
    ids = torch.randint(0, 50257, (4, 1024), device=DEV)

    def make(name, model, amp):
        net = torch.compile(model, fullgraph=True)

        def infer():
            with torch.no_grad(), amp:
                net(ids)
        return infer
    _side_by_side(w, "compiled inference", make, "eval", 30)


def sec_train(w):
    """The compiled training step (model + chunked loss as one graph, as ``muse train`` runs it; default mode) of
    Stage 1 seed and the GPT reference (its loss traced by the compiler, as in its fastest ``muse bench speed``
    row), side by side."""
    from muse import kernels
    from muse.train.loss import compile_model_loss

    ids = torch.randint(0, 50257, (4, 1025), device=DEV)
    inp, tgt = ids[:, :-1], ids[:, 1:]

    def make(name, model, amp):
        loss_fn = compile_model_loss(model, keep_logits=KEEP_LOGITS)
        traced = name == "gpt" and not KEEP_LOGITS

        def train():
            model.zero_grad(set_to_none=True)
            with kernels.environment(MUSE_LOSS_OPAQUE="0" if traced else None), amp:
                loss = loss_fn(inp, tgt)  # the environment is read when the first call traces the graph
            loss.backward()
        return train
    _side_by_side(w, "compiled fwd+bwd", make, "train", 40)


def sec_copies(w):
    """Stage 1 seed's compiled training step (as ``sec_train``): the host-side copies (``aten::copy_``,
    ``aten::_to_copy``, ``aten::clone``, memcpy) grouped by input shape, to find which tensors they move."""
    from muse.train.loss import compile_model_loss

    ids = torch.randint(0, 50257, (4, 1025), device=DEV)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    torch.manual_seed(0)
    model = build_model("stage1", "seed", device=DEV).train()
    loss_fn = compile_model_loss(model)

    def train():
        model.zero_grad(set_to_none=True)
        loss_fn(inp, tgt).backward()
    for _ in range(3):
        train()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        train()
        torch.cuda.synchronize()
    keep = ("copy", "clone", "contiguous", "Memcpy", "Memset", "fill_", "zero_")
    for e in sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.device_time_total):
        if any(k in e.key for k in keep):
            w(f"{e.count:4d} x {e.key:<32} device {e.device_time_total:9.1f} us  shapes {e.input_shapes}")
    torch._dynamo.reset()


def sec_head(w, n: int = 4096, d: int = 512, v: int = 50257):
    """Stage 1's head alone (4096 x 512 -> 50,257, fp16, bias) as the model runs it and in the forms that
    could avoid the pass over the weight seen before its GEMM in compiled inference (thirteenth session):
    eager, compiled, compiled without inductor's shape padding, mm then the bias, a weight stored padded
    to a multiple of 64 rows; the GPT's bf16 head without bias beside it. Times are CUDA-event medians."""
    import torch._inductor.config as inductor_config

    x = torch.randn(n, d, device=DEV).half()
    wt = (torch.randn(v, d, device=DEV) / d**0.5).half()
    b = torch.zeros(v, device=DEV).half()
    vp = -(-v // 64) * 64
    wp, bp = torch.zeros(vp, d, device=DEV).half(), torch.zeros(vp, device=DEV).half()
    wp[:v], bp[:v] = wt, b

    def head(a, weight, bias):
        return C.gemm_linear(a, weight, bias)

    def padded(a, weight, bias):
        return C.gemm_linear(a, weight, bias)[:, :v]

    def mm_bias(a, weight, bias):
        return C.gemm_linear(a, weight, None) + bias

    rows = [("eager", head, (x, wt, b)), (f"eager, weight padded to {vp} rows", padded, (x, wp, bp))]
    for label, fn, args in rows:
        with torch.no_grad():
            w(f"{label}: {bench(lambda fn=fn, args=args: fn(*args)):.4f} ms")
    for label, fn, args, pad in (("compiled", head, (x, wt, b), True),
                                 ("compiled, shape_padding off", head, (x, wt, b), False),
                                 ("compiled, mm then bias", mm_bias, (x, wt, b), True),
                                 (f"compiled, weight padded to {vp} rows", padded, (x, wp, bp), True)):
        torch._dynamo.reset()
        with inductor_config.patch(shape_padding=pad), torch.no_grad():
            f = torch.compile(fn, fullgraph=True)
            f(*args)
            w(f"{label}: {bench(lambda f=f, args=args: f(*args)):.4f} ms")
            if label == "compiled":
                w(table(lambda f=f, args=args: f(*args), n=5, rows=6))
    xb, wb = x.bfloat16(), wt.bfloat16()
    w(f"GPT's head, bf16, no bias, eager: {bench(lambda: F.linear(xb, wb)):.4f} ms")


SECTIONS = {"linear": sec_linear, "loss": sec_loss, "compiled": sec_compiled, "phase2": sec_phase2,
            "decode": sec_decode, "infer": sec_infer, "train": sec_train, "copies": sec_copies, "head": sec_head,
            "eager": sec_eager}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/profile")
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--keep-logits", action="store_true",
                   help="train section: both models' losses keep their chunks' logits (the GPT's opaque, not traced)")
    p.add_argument("--half-weights", action="store_true",
                   help="infer section: the GPT from bf16 weights, no autocast (bench speed's half-weights variant)")
    args = p.parse_args()
    global KEEP_LOGITS, HALF_WEIGHTS
    KEEP_LOGITS, HALF_WEIGHTS = args.keep_logits, args.half_weights
    C.set_gemm_policy()  # the sections compile MUSE ops
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.sections.split(","):
        path = out / f"{name}.txt"
        with path.open("w") as fh:
            def w(line: str, fh=fh) -> None:
                print(line, flush=True)
                fh.write(line + "\n")
                fh.flush()
            t0 = time.perf_counter()
            try:
                SECTIONS[name](w)
            except Exception:
                w(f"SECTION {name} FAILED\n{traceback.format_exc()}")
            w(f"[{name}: {time.perf_counter() - t0:.1f} s]")
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
