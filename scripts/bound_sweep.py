"""Launch shapes of the logits bound's one-pass kernel (``muse.kernels._triton.logits_bound_parts``) against the
compiler's reductions, at Stage 1's head (float16 input and weight) and the GPT's under autocast (float32 input and
weight), seed sizes: B·S = 4,096 rows of d = 512, V = 50,257.  Each form is captured in a CUDA graph (the host out of
the timing) and its replay timed with ``triton.testing.do_bench`` (median); the chosen shape goes into ``BOUND_LAUNCH``.

    python scripts/bound_sweep.py [--device cuda] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from muse.kernels import _triton

LAUNCHES = [(rows, warps, per_sm) for rows in (8, 16, 32) for warps in (4, 8) for per_sm in (1, 2, 4, 8)]


def _reductions(h, w, b):
    return (torch.linalg.vector_norm(h, dim=-1, dtype=torch.float32).amax()
            * torch.linalg.vector_norm(w, dim=-1, dtype=torch.float32).amax() + b.abs().amax().float())


def _kernel(launch):
    def f(h, w, b):
        part = _triton.logits_bound_parts(h, w, b, launch=launch)
        return part[1].amax().sqrt() * part[0].amax().sqrt() + part[2].amax()
    return f


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from triton.testing import do_bench

    device = torch.device(args.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    report = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shapes": {}}
    for name, dtype in (("stage1 fp16", torch.float16), ("gpt fp32", torch.float32)):
        h = torch.randn(4096, 512, generator=gen).to(device, dtype)
        w = (0.02 * torch.randn(50257, 512, generator=gen)).to(device, dtype)
        b = torch.randn(50257, generator=gen).to(device, dtype)
        want = float(_reductions(h, w, b))
        forms = {"reductions (compiled)": torch.compile(_reductions)}
        forms.update({f"kernel {launch}": _kernel(launch) for launch in LAUNCHES})
        rows = {}
        for form, f in forms.items():
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    f(h, w, b)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = f(h, w, b)
            graph.replay()
            got = float(out)
            ms = do_bench(graph.replay, warmup=25, rep=200, return_mode="median")
            rows[form] = {"us": ms * 1e3, "rel_diff": abs(got - want) / want}
        best = min((k for k in rows if k.startswith("kernel")), key=lambda k: rows[k]["us"])
        report["shapes"][name] = {"forms": rows, "best": best}
        print(f"{name}: reductions {rows['reductions (compiled)']['us']:.1f} us; best {best} {rows[best]['us']:.1f} us")
        for form, r in sorted(rows.items(), key=lambda kv: kv[1]["us"])[:6]:
            print(f"   {form}: {r['us']:.1f} us (rel diff {r['rel_diff']:.1e})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
