"""Phase 2's scans with and without the Triton kernels: the scans alone, the mixers, the whole model.

    python scripts/bench_phase2_scans.py                      # CUDA: seed shapes (B=4, S=1024)
    python scripts/bench_phase2_scans.py --compile            # adds the compiled model (slow to compile)
    python scripts/bench_phase2_scans.py --sections model --amp bf16   # the model under bf16 autocast
    python scripts/bench_phase2_scans.py --device cpu --preset tiny --seq 64 --batch 2 --repeats 2

Every row is fwd+bwd and runs once with ``MUSE_KERNELS=0`` (the PyTorch scans) and once with
``MUSE_KERNELS=1`` (the kernels where ``muse.kernels.enabled`` picks them: CUDA, or CPU under
``TRITON_INTERPRET=1``).  The model rows use the training loss path (``model_loss``) and, with
``--amp``, the trainer's autocast (the scans stay fp32 inside it); ``--tf32`` lets fp32 GEMMs use TF32.  For each scan the largest difference between the two implementations
is printed next to the timings, so a first run on a new GPU is also a correctness check.  Timing:
median of ``--repeats`` calls after warm-up, CUDA events on CUDA, perf_counter on CPU.  A
diagnostic for docs/performance.md; every figure taken from it goes there with device and command.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import traceback

import torch

from muse import kernels
from muse.models import build_model
from muse.models.phase2 import PRESETS, Phase2Config
from muse.nn.mixers import BKCore, DissipativeHebbian
from muse.scan import bk_diagonal, bk_green_scan, hebbian_parallel
from muse.train.loss import compile_model_loss, model_loss

MODES = {"pytorch": "0", "kernels": "1"}
AMP = {None: torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median ms of fn() after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize(device)
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _fwd_bwd(f, inputs):
    """fn() that runs f(*inputs) forward and backward; inputs' grads reset each call."""
    def fn():
        for t in inputs:
            t.grad = None
        out = f(*inputs)
        (out.real if out.is_complex() else out).float().pow(2).mean().backward()
        return out
    return fn


def _both(name, f, inputs, device, repeats, rows):
    """Time f fwd+bwd under each mode; report ms and the largest output/grad difference between modes."""
    outs = {}
    for mode, env in MODES.items():
        with kernels.environment(MUSE_KERNELS=env):
            fn = _fwd_bwd(f, inputs)
            ms = timed(fn, device, repeats)
            out = fn()
            outs[mode] = [out.detach().clone()] + [t.grad.clone() for t in inputs]
        rows.append({"row": name, "mode": mode, "ms": round(ms, 4)})
    diff = max(float((a - b).abs().max()) if a.numel() else 0.0
               for a, b in zip(outs["pytorch"], outs["kernels"], strict=True))
    print(f"{name:<34} pytorch {rows[-2]['ms']:9.3f} ms   kernels {rows[-1]['ms']:9.3f} ms   "
          f"x{rows[-2]['ms'] / max(rows[-1]['ms'], 1e-9):5.2f}   max |diff| {diff:.2e}", flush=True)
    rows[-1]["max_abs_diff"] = diff


def scans(cfg: Phase2Config, batch: int, seq: int, device, repeats, rows):
    g = torch.Generator().manual_seed(0)
    shape = (batch, cfg.bk_channels, seq)
    v = (1.5 * torch.randn(shape, generator=g)).to(device).requires_grad_(True)
    gamma = torch.nn.functional.softplus(torch.randn(shape, generator=g)).to(device).requires_grad_(True)
    _both(f"bk_green_scan {shape}", lambda v, gm: bk_green_scan(bk_diagonal(v, gm), cfg.bk_z),
          [v, gamma], device, repeats, rows)
    hshape = (batch, cfg.n_heads, seq, cfg.d_head)
    q, k, vv = (0.3 * torch.randn(hshape, generator=g)).to(device), torch.randn(hshape, generator=g).to(device), \
        torch.randn(hshape, generator=g).to(device)
    ld = (-0.05 * torch.rand(hshape[:-1], generator=g)).to(device)
    for t in (q, k, vv, ld):
        t.requires_grad_(True)
    _both(f"hebbian_parallel {hshape} c={cfg.hebbian_chunk_size}",
          lambda q, k, v, ld: hebbian_parallel(q, k, v, ld, cfg.hebbian_eta, cfg.hebbian_chunk_size),
          [q, k, vv, ld], device, repeats, rows)


def mixers(cfg: Phase2Config, batch: int, seq: int, device, repeats, rows):
    torch.manual_seed(0)
    x = torch.randn(batch, seq, cfg.d_model, device=device, requires_grad=True)
    for name in ("bk", "hebbian"):
        cls = BKCore if name == "bk" else DissipativeHebbian
        layer = cls(**cfg.mixer_kwargs(name), device=device)
        _both(f"{cls.__name__} (B={batch}, S={seq})", layer, [x], device, repeats, rows)


def model(preset: str, batch: int, seq: int, device, repeats, rows, compile_: bool, amp: str | None,
          modes: tuple[str, ...] = tuple(MODES), compile_mode: str | None = None):
    torch.manual_seed(0)
    m = build_model("phase2", preset, device=device, max_seq_len=max(seq, 1)).train()
    ids = torch.randint(0, m.config.vocab_size, (batch, seq + 1), device=device)
    inp, tgt = ids[:, :-1], ids[:, 1:]
    variants = ["eager"] + (["compiled"] if compile_ else [])
    for label in variants:
        for mode in modes:
            env = MODES[mode]
            with kernels.environment(MUSE_KERNELS=env):
                runner = functools.partial(model_loss, m)
                if label == "compiled":  # model + loss as one graph, as muse train runs it
                    torch._dynamo.reset()
                    runner = compile_model_loss(m, mode=compile_mode)  # the environment is read when the graph is traced

                def step(runner=runner):
                    m.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=AMP[amp], enabled=amp is not None):
                        loss = runner(inp, tgt)
                    loss.backward()
                t0 = time.perf_counter()
                step()
                first_s = time.perf_counter() - t0
                ms = timed(step, device, repeats)
            tok_s = batch * seq / (ms / 1e3)
            rows.append({"row": f"phase2 {preset} {label}", "mode": mode, "amp": amp, "compile_mode": compile_mode, "ms": round(ms, 3),
                         "tok_s": round(tok_s), "first_call_s": round(first_s, 1)})
            print(f"phase2 {preset} {label:<9} {mode:<8} {amp or 'fp32':<5} fwd+bwd {ms:9.2f} ms  {tok_s:12,.0f} tok/s  "
                  f"(first call {first_s:.1f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="seed", choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--sections", default="scans,mixers,model",
                   help="comma-separated: scans, mixers, baseline (the model eager, fp32, PyTorch scans), model")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(model) (minutes to compile)")
    p.add_argument("--amp", choices=["bf16", "fp16"], help="autocast for the model rows (as muse train --amp)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 GEMMs (default: off, as in muse)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--modes", default=",".join(MODES), help="scan implementations of the model rows")
    p.add_argument("--compile-mode", choices=["reduce-overhead"], help="torch.compile mode of the compiled row")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    cfg = Phase2Config(**PRESETS[args.preset])
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "triton_interpret": kernels.interpreting(), "preset": args.preset,
            "batch": args.batch, "seq": args.seq, "amp": args.amp, "tf32": args.tf32}
    print(json.dumps(info), flush=True)
    if device.type == "cpu" and not kernels.interpreting():
        print("note: on CPU the kernels run only under TRITON_INTERPRET=1; both modes are the PyTorch path")
    rows: list[dict] = []
    for section in args.sections.split(","):
        try:
            if section == "scans":
                scans(cfg, args.batch, args.seq, device, args.repeats, rows)
            elif section == "mixers":
                mixers(cfg, args.batch, args.seq, device, args.repeats, rows)
            elif section == "baseline":  # eager, fp32, PyTorch scans: the reference of the 3x target
                model(args.preset, args.batch, args.seq, device, args.repeats, rows, False, None, ("pytorch",))
            elif section == "model":
                model(args.preset, args.batch, args.seq, device, args.repeats, rows, args.compile, args.amp,
                      tuple(args.modes.split(",")), args.compile_mode)
            else:
                raise ValueError(f"unknown section {section!r}; choose from scans, mixers, baseline, model")
        except Exception:
            print(f"SECTION {section} FAILED\n{traceback.format_exc()}", flush=True)
            rows.append({"row": section, "failed": traceback.format_exc()[-2000:]})
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"info": info, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
