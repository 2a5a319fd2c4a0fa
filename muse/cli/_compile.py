"""The ``--compile/--no-compile`` flag shared by train, eval, bench and smoke."""

from __future__ import annotations

import argparse


def add_compile_flag(parser) -> None:
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="run the model under torch.compile (default: on for CUDA, off for CPU); "
                             "reports say whether it ran compiled and the compile time apart from run time")
