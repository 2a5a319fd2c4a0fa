"""The ``muse`` command line: one module per subcommand in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and
sets ``func`` to a ``run(args) -> int`` whose heavy imports happen inside it.
Modules are discovered automatically; names starting with ``_`` are helpers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

EPILOG = """examples:
  muse smoke                          # the seed's simple test on the default device
  muse smoke --device cuda --preset seed
  muse train --model stage1 --preset tiny --train-split valid
  muse verify --profile ci
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse",
        description="MUSE: planar complex32 language models with verified numerics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    package = importlib.import_module(__name__)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Bad input (TypeError/ValueError/missing file) prints one line and exits 2;
    set MUSE_DEBUG=1 to see the traceback instead."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("MUSE_DEBUG"):
            raise
        print(f"muse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
