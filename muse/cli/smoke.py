"""``muse smoke``: the seed's simple test (create / forward / backward / memory) with an exit code."""

from __future__ import annotations

import argparse

from muse.cli._compile import add_compile_flag


def register(sub) -> None:
    p = sub.add_parser(
        "smoke",
        help="create the model, run forward and backward, measure memory; PASS/FAIL",
        description="The seed report's simple test: model creation (parameter count), forward "
        "(shape, NaN/Inf), backward (loss, every gradient norm in [1e-6, 1e3]) and memory.",
        epilog="examples:\n  muse smoke\n  muse smoke --device cuda --json smoke.json\n"
        "  muse smoke --model phase2 --preset tiny",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="stage1", help="model name (default: stage1)")
    p.add_argument("--preset", default="seed", help="model preset (default: seed, the 80,937,553-parameter model)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-memory-gb", type=float, default=8.0, help="memory threshold (seed report: 8 GB)")
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    add_compile_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from muse._io import check_output_file, write_report_json
    from muse.smoke import format_report, run_smoke

    if args.json:
        check_output_file("--json", args.json)
    res = run_smoke(args.model, args.preset, args.device, args.batch_size, args.seq_len, args.seed,
                    args.max_memory_gb, compile=args.compile)
    print(format_report(res))
    if args.json:
        write_report_json(args.json, res.to_dict(), default=str)
    return 0 if res.passed else 1
