"""The ``muse`` command line: one module per subcommand in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and
sets ``func`` to a ``run(args) -> int`` whose heavy imports happen inside it.
Modules are discovered automatically; names starting with ``_`` are helpers.
"""

from __future__ import annotations

import argparse
import difflib
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


class _Parser(argparse.ArgumentParser):
    """argparse with the error contract of :func:`main`: a usage error is ONE line,
    ``muse <cmd>: error: <what>``, and exit status 2 (``--help`` shows the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    """Run one subcommand; the error contract (docs/errors.md) in one place.

    Exit 0: success. 2: what the command was given is invalid (an argument, or a file, directory
    or data it names: TypeError, ValueError, OSError), reported as one line
    ``muse <cmd>: error: ...``. 1: the work ran and failed (a diverged run, a non-finite eval, a
    failed check); the subcommand reports it. 130: interrupted (Ctrl-C). Set MUSE_DEBUG=1 to see
    the traceback instead of the one line.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _leaf(parser, args).error(_unrecognized(_leaf(parser, args), extra))
    try:
        return int(args.func(args) or 0)
    except (TypeError, ValueError, OSError) as exc:
        if os.environ.get("MUSE_DEBUG"):
            raise
        print(f"muse {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("MUSE_DEBUG"):
            raise
        print(f"muse {args.command}: error: interrupted", file=sys.stderr)
        return 130


def _leaf(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)subcommand that ``args`` selected, so its errors name it."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if action is None or getattr(args, action.dest, None) not in action.choices:
            return parser
        parser = action.choices[getattr(args, action.dest)]


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """argparse's message, plus the nearest option for a misspelt one (``--steps``: ``--max-steps``)."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for word in extra:
        if word.startswith("--"):
            near = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.6)
            if near:
                return f"{message}; did you mean {near[0]}?"
    return message


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
