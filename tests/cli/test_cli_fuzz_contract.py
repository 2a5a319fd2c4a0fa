"""Fuzzing the error contract (docs/errors.md) with Hypothesis.

* The CLI: random subcommands with random flags and hostile values, run in-process through
  ``muse.cli.main``. Every outcome is exit 0, or 1/2/130 with exactly one
  ``muse <cmd>: error:`` line on stderr and no traceback; any other exception fails the test.
  The expensive part of each command (the training loop, the benchmark, the pytest run of
  ``muse verify``) is replaced by a sentinel raised once every check before it has passed; the
  parsing, validation, data loading and model building before it run for real.
* The public API: random shapes and dtypes into the complex ops and the models; every failure
  is a TypeError or ValueError.

The number of examples follows the Hypothesis profile (``ci`` by default, ``dev`` and
``thorough`` from verification/plugin.py run more): ``pytest --hypothesis-profile=thorough``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import muse.complex as C
from muse.cli import build_parser, main
from muse.data import shared_data_dir
from muse.models import build_model
from muse.train.synthetic import repeated_sequence
from verification.plugin import examples

HAVE_DATA = (shared_data_dir() / "wikitext-2-raw" / "wiki.test.raw").is_file()
CLI_EXAMPLES = examples(0.3, minimum=15)  # ci: 30 command lines, dev 90, thorough 3000


class Reached(BaseException):
    """Raised where the heavy work would start: every check before it passed (not an error)."""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command: ``train``, ``eval``, ..., ``data prepare``, ``data export``."""
    out = {}
    for name, sub in _subparsers(build_parser()).items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            out.update({f"{name} {k}": v for k, v in nested[0].choices.items()})
        else:
            out[name] = sub
    return out


COMMANDS = _commands()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real paths for the value pool: a checkpoint, token files, a plain file, a directory."""
    root = tmp_path_factory.mktemp("fuzz")
    train, evals = root / "train.npy", root / "eval.npy"
    np.save(train, repeated_sequence(64, 48, 4096).astype(np.uint16))
    np.save(evals, repeated_sequence(64, 48, 512).astype(np.uint16))
    assert main(["train", "--vocab-size", "64", "--d-model", "8", "--n-layers", "1", "--seq-len", "16",
                 "--batch-size", "2", "--max-steps", "1", "--warmup", "0", "--eval-every", "0",
                 "--device", "cpu", "--no-progress", "--tokens-npy", str(train), "--eval-tokens-npy",
                 str(evals), "--out", str(root / "run")]) == 0
    plain = root / "plain.txt"
    plain.write_text("not a checkpoint, not numpy")
    return {"ckpt": str(root / "run" / "last.safetensors"), "train": str(train), "eval": str(evals),
            "plain": str(plain), "dir": str(root), "missing": str(root / "missing" / "x")}


def _values(files: dict) -> st.SearchStrategy[str]:
    nasty = ["-1", "0", "1", "2", "3", "nan", "inf", "-inf", "1e30", "0.5", "abc", "", "tiny", "seed",
             "stage1", "phase2", "cpu", "cuda", "cuda:abc", "tpu", "auto", "valid", "test", "train",
             "zeta_scale=100000", "dropout=2", "colour=1", "x=", "=1"]
    return st.sampled_from(nasty + list(files.values()))


TYPED = {int: ["-1", "0", "1", "2", "3", "16"], float: ["-1", "0", "0.5", "1", "nan", "inf", "1e30", "1e-30"]}


@st.composite
def _command_lines(draw, files: dict):
    name = draw(st.sampled_from(sorted(COMMANDS)))
    parser = COMMANDS[name]
    argv = name.split()
    options = [a for a in parser._actions if a.option_strings and "-h" not in a.option_strings]
    positionals = [a for a in parser._actions if not a.option_strings and a.dest != "help"]
    values = _values(files)
    for action in positionals:  # usually given, sometimes left out (a usage error)
        if draw(st.integers(0, 9)):
            argv.append(draw(st.sampled_from(action.choices)) if action.choices else draw(values))
    for action in draw(st.lists(st.sampled_from(options), max_size=5, unique_by=lambda a: a.dest)):
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0 and draw(st.integers(0, 19)):  # a missing value now and then
            typed = TYPED.get(action.type)
            if action.choices and draw(st.booleans()):
                argv.append(draw(st.sampled_from(list(action.choices))))
            elif typed and draw(st.integers(0, 3)):  # mostly well-typed, so validation is reached
                argv.append(draw(st.sampled_from(typed)))
            else:
                argv.append(draw(values))
    if name in ("train", "smoke", "bench stage1"):  # keep each run small: tiny models on CPU
        argv += ["--device", "cpu"] if "--device" not in argv else []
        argv += ["--preset", "tiny"] if "--preset" not in argv else []
    return argv


def _run(argv: list[str]) -> tuple[int | str, str]:
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage error (2) or --help-like exits (0)
            code = exc.code if isinstance(exc.code, int) else 2
        except Reached:
            code = "reached"
    return code, err.getvalue()


@pytest.mark.skipif(not HAVE_DATA, reason="shared/data WikiText-2 files are not present")
def test_every_cli_failure_is_one_error_line(files, monkeypatch):
    import importlib

    import muse.cli.verify
    import muse.train.distributed
    from muse.train import trainer

    evaluate_mod = importlib.import_module("muse.train.evaluate")  # muse.train.evaluate is also a function

    def reached(*_a, **_k):
        raise Reached

    real_evaluate = evaluate_mod.evaluate

    def bounded_evaluate(*args, **kwargs):
        kwargs["max_tokens"] = min(kwargs.get("max_tokens") or 128, 128)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "run", reached)
    monkeypatch.setattr(muse.train.distributed, "init_distributed", reached)  # bench imports it late
    monkeypatch.setattr(muse.cli.verify.subprocess, "Popen", reached)
    monkeypatch.setattr(evaluate_mod, "evaluate", bounded_evaluate)
    monkeypatch.chdir(files["dir"])  # default output directories land in the temporary tree
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MUSE_CACHE_DIR", str(Path(tempfile.gettempdir()) / "muse-fuzz-cache"))
    seen = set()

    @settings(max_examples=CLI_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=_command_lines(files))
    def check(argv):
        code, err = _run(argv)
        seen.add(code)
        assert code in (0, 1, 2, 130, "reached"), (argv, code, err)
        assert "Traceback" not in err, (argv, err)
        if code in (1, 2, 130):
            cmd = " ".join(argv[:2]) if argv[0] == "data" and argv[1:2] in (["prepare"], ["export"]) else argv[0]
            lines = [ln for ln in err.splitlines() if ": error:" in ln]
            assert len(lines) == 1, (argv, err)
            assert lines[0].startswith(f"muse {cmd}: error: ") or lines[0].startswith(f"muse {argv[0]}: error: "), (argv, err)

    check()
    assert 2 in seen, seen  # the hostile values did reach the error paths


# ------------------------------------------------------------------------------ public API
DTYPES = [torch.float16, torch.float32, torch.float64, torch.int32, torch.int64, torch.uint16, torch.uint8,
          torch.bool, torch.complex64]
shapes = st.lists(st.integers(0, 3), max_size=3).map(tuple)


@st.composite
def _operands(draw):
    kind = draw(st.sampled_from(["complex", "tensor", "number", "other"]))
    shape, dtype = draw(shapes), draw(st.sampled_from(DTYPES))
    if kind == "complex":
        return C.zeros(*shape, dtype=draw(st.sampled_from(DTYPES[:3])))
    if kind == "tensor":
        return torch.zeros(shape, dtype=dtype)
    if kind == "number":
        return draw(st.sampled_from([1, 2.5, 1j, float("nan"), True]))
    return draw(st.sampled_from([None, "x", [1.0], np.ones(2)]))


@settings(max_examples=examples(1.0, minimum=50), deadline=None)
@given(op=st.sampled_from(["add", "sub", "mul", "div", "matmul", "eq"]), a=_operands(), b=_operands())
def test_binary_ops_fail_only_with_type_or_value_errors(op, a, b):
    if op == "eq" and not isinstance(a, C.ComplexTensor):
        a, b = b, a  # ComplexTensor.__eq__ is under test, not torch's or numpy's ==
    if op == "eq" and not isinstance(a, C.ComplexTensor):
        return
    fn = (lambda x, y: x == y) if op == "eq" else getattr(C, op)
    try:
        fn(a, b)
    except (TypeError, ValueError):
        pass


@settings(max_examples=examples(0.5, minimum=30), deadline=None)
@given(parts=st.lists(_operands(), min_size=0, max_size=3), dim=st.integers(-2, 1))
def test_cat_and_stack_fail_only_with_type_value_or_index_errors(parts, dim):
    for fn in (C.cat, C.stack):
        try:
            fn(parts, dim)
        except (TypeError, ValueError, IndexError):  # IndexError: dim out of range, as in Python
            pass


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return [build_model(name, "tiny", vocab_size=32, max_seq_len=8).eval() for name in ("stage1", "phase2")]


@settings(max_examples=examples(0.5, minimum=30), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=shapes, dtype=st.sampled_from(DTYPES), high=st.sampled_from([1, 32, 33, 70000]),
       negative=st.booleans())
def test_models_fail_only_with_type_or_value_errors(models, shape, dtype, high, negative):
    ids = torch.randint(0, high, shape).to(torch.int64)
    if negative and ids.numel():
        ids.view(-1)[0] = -1
    ids = ids.to(dtype) if dtype.is_floating_point or dtype in (torch.int32, torch.int64, torch.bool) else ids
    if dtype in (torch.uint16, torch.uint8) and not negative:
        ids = ids.clamp(max=torch.iinfo(dtype).max).to(dtype)
    for model in models:
        try:
            logits = model(ids)
        except (TypeError, ValueError):
            continue
        assert logits.shape == (*ids.shape, 32) and torch.isfinite(logits).all()
