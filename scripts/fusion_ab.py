"""One-process A/B of Stage 1's inference forms (issue 11): compiled seed-preset inference with the tree's
form and with its latest change undone, timed in alternation on one GPU.

    python scripts/fusion_ab.py [--device cuda] [--batch-size 4] [--seq 1024] [--rounds 5] [--out FILE.json]

Forms: "library" (the tree: the head's GEMM over its padded storage) and "head unpadded" (the plain head GEMM,
which inductor pads by copying the weight on every call).  Each form is compiled with ``fullgraph=True``
(inductor's default mode) and captured in one CUDA graph, so the host is out of the timing; the graphs are then
replayed in turn, ``--rounds`` times, and each form's median over the rounds is reported with every round's
value.  Separate processes differ by about 1.5 % (docs/performance.md); alternating in one process removes that
spread from the comparison.  On the CPU (no CUDA graphs) it times the compiled calls the same way, which only
checks that the script runs.  A diagnostic: the figures that go into docs/performance.md say which script and
which device gave them.  Earlier versions timed modReLU in the complex GEMM's epilogue (4dce78e; slower,
removed), the residual inside LN2 against a separate add (7eeb042; +3.0 %, kept) and modReLU inside LN2's pass
(3a92c80; no gain, removed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import muse.complex as C
from muse.models import build_model
from muse.nn import RealLinear


def _plain_head(self, x):
    """The head's GEMM over its (V, d) weight, as before the padded storage."""
    return C.gemm_linear(x, self.weight, self.bias)


LIBRARY = RealLinear.forward
FORMS = {"library": LIBRARY, "head unpadded": _plain_head}
REFERENCE = "head unpadded"


def _replayer(fn, device: torch.device):
    """A zero-argument call that runs ``fn()`` once: a CUDA graph's replay on CUDA (warmed up first on a side
    stream, so Triton's autotuning stays outside the capture), ``fn`` itself elsewhere."""
    if device.type != "cuda":
        return fn
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _seconds(call, device: torch.device) -> float:
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(call, warmup=25, rep=200, return_mode="median") / 1e3
    call()
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="seed")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    model = build_model("stage1", preset=args.preset, device=device).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq), generator=gen).to(device)
    C.set_gemm_policy()  # compiling MUSE ops on CUDA needs the process-wide GEMM policy first
    calls, compile_s, logits = {}, {}, {}
    try:
        for name, head_forward in FORMS.items():
            RealLinear.forward = head_forward
            torch._dynamo.reset()
            net = torch.compile(model, fullgraph=True)

            def infer(net=net):
                with torch.no_grad():
                    return net(ids)

            t0 = time.perf_counter()
            logits[name] = infer().float()
            compile_s[name] = time.perf_counter() - t0
            calls[name] = _replayer(infer, device)
    finally:
        RealLinear.forward = LIBRARY
    ref = logits[REFERENCE]
    rounds = {name: [] for name in FORMS}
    for _ in range(args.rounds):
        for name, call in calls.items():
            rounds[name].append(_seconds(call, device))
    tokens = args.batch_size * args.seq
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "batch_size": args.batch_size, "seq": args.seq, "rounds": args.rounds,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "forms": {}}
    for name, times in rounds.items():
        med = statistics.median(times)
        report["forms"][name] = {"median_ms": med * 1e3, "tok_s": tokens / med, "rounds_ms": [t * 1e3 for t in times],
                                 "first_call_s": compile_s[name],
                                 "max_abs_logit_diff_vs_unpadded": float((logits[name] - ref).abs().max())}
        print(f"{name:>20}: {med * 1e3:.4f} ms ({tokens / med:,.0f} tok/s); rounds "
              + ", ".join(f"{t * 1e3:.4f}" for t in times)
              + f"; first call {compile_s[name]:.1f} s; max |logits - unpadded's| "
              + f"{report['forms'][name]['max_abs_logit_diff_vs_unpadded']:.3g}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
