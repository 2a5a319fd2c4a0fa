"""Pytest plugin for both ``tests/`` and ``verification/`` (loaded by the top-level conftest.py).

- Hypothesis profiles ``ci`` (derandomized, no database, no deadline, 100 examples),
  ``dev`` (random, local database, 300 examples) and ``thorough`` (10,000 examples),
  chosen with ``--hypothesis-profile NAME`` or ``MUSE_HYPOTHESIS_PROFILE``; default ci.
- xdist on GPUs: worker ``gwN`` is pinned in ``pytest_configure`` (before anything
  initialises CUDA) to entry N mod len of the caller's CUDA_VISIBLE_DEVICES list, or
  of all GPUs when it is unset, so ``pytest -n 4`` on a 4-GPU host uses all four.
- Without a GPU, Triton runs in its interpreter (``TRITON_INTERPRET=1``, kernels off unless a
  test asks for them; see :func:`interpret_without_gpu`).
- ``--muse-device cpu|cuda|all`` (or MUSE_VERIFY_DEVICE) picks the devices of the
  ``device`` parameter of every test (tests/ and verification/); tests marked ``cuda``
  skip without a GPU.
- With MUSE_VERIFY_RECORD_DIR set (``muse verify`` sets it), every process writes its
  measurements there at session end and the controller writes the test outcomes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings

from verification.record import RECORD_DIR_ENV, STORE, worker_id

PROFILE_ENV = "MUSE_HYPOTHESIS_PROFILE"
DEVICE_ENV = "MUSE_VERIFY_DEVICE"
DEFAULT_PROFILE = "ci"
DEVICE_CHOICES = ("cpu", "cuda", "all")
_QUIET = (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
          HealthCheck.differing_executors)

PROFILES: dict[str, dict] = {
    "ci": dict(max_examples=100, derandomize=True, database=None, deadline=None, print_blob=True,
               suppress_health_check=_QUIET),
    "dev": dict(max_examples=300, deadline=None, print_blob=True, suppress_health_check=_QUIET),
    "thorough": dict(max_examples=10_000, deadline=None, database=None, print_blob=True,
                     suppress_health_check=_QUIET,
                     phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)),
}


def register_profiles() -> None:
    """Register the MUSE profiles with Hypothesis (idempotent)."""
    for name, kwargs in PROFILES.items():
        settings.register_profile(name, **kwargs)


# At import time, so hypothesis' own pytest_configure can load --hypothesis-profile=ci etc.
register_profiles()


def profile_name() -> str:
    """The Hypothesis profile in force ('ci', 'dev', 'thorough' or another registered one)."""
    return settings.get_current_profile_name()


def examples(fraction: float = 1.0, minimum: int = 5) -> int:
    """max_examples of the current profile scaled by ``fraction`` (for expensive properties)."""
    return max(minimum, int(settings().max_examples * fraction))


# ------------------------------------------------------------------ GPU pinning
_WORKER_RE = re.compile(r"gw(\d+)")


def gpu_for_worker(worker: str | None, visible: str | None, gpu_count: int) -> str | None:
    """CUDA_VISIBLE_DEVICES for xdist worker ``gwN``, or None to leave the environment alone.

    ``visible`` is the caller's CUDA_VISIBLE_DEVICES (None if unset): worker N gets its
    entry N mod len (indices or UUIDs are kept as written, so an outer "1" stays
    physical GPU 1).  Unset: entry N mod gpu_count of 0..gpu_count-1.  Not a worker,
    an empty list or no GPU: None.
    """
    if worker is None:
        return None
    m = _WORKER_RE.fullmatch(worker)
    if m is None:
        return None
    n = int(m.group(1))
    if visible is not None:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
    else:
        entries = [str(i) for i in range(max(gpu_count, 0))]
    if not entries or entries == ["-1"]:
        return None
    return entries[n % len(entries)]


def count_gpus() -> int:
    """Number of NVIDIA GPUs without initialising CUDA (driver /proc entries, else nvidia-smi)."""
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def pin_worker_gpu(environ=os.environ, gpu_count: int | None = None) -> str | None:
    """Apply :func:`gpu_for_worker` to ``environ``; returns the value set (or None)."""
    worker = environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return None
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    count = count_gpus() if gpu_count is None and visible is None else (gpu_count or 0)
    choice = gpu_for_worker(worker, visible, count)
    if choice is not None:
        environ["MUSE_CALLER_CUDA_VISIBLE_DEVICES"] = "" if visible is None else visible
        environ["CUDA_VISIBLE_DEVICES"] = choice
    return choice


_OUTCOMES: list[dict] = []  # test outcomes seen by this (controller) process
_COLLECTED: set[str] = set()  # node ids selected to run (after -k), as the controller learns them


def _records_here() -> bool:
    """True in the process that writes outcomes.json: the controller of a run with a record directory."""
    return bool(os.environ.get(RECORD_DIR_ENV)) and not os.environ.get("PYTEST_XDIST_WORKER")


# ---------------------------------------------------------------------- hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("muse", "MUSE verification")
    group.addoption("--muse-device", choices=DEVICE_CHOICES, default=None,
                    help="devices for the verification 'device' parameter (default: $MUSE_VERIFY_DEVICE or all)")


def interpret_without_gpu(environ=os.environ, gpu_count: int | None = None) -> bool:
    """Without a visible GPU, run Triton in its CPU interpreter, so the kernel tests run on CPU.

    ``TRITON_INTERPRET=1`` must be set before the first ``import triton``; kernels then stay off
    (``MUSE_KERNELS=0``) except where a test asks for them (tests/kernels, the verification
    ``impl`` parameter).  An explicit TRITON_INTERPRET is left alone.  Returns True if it set it.
    """
    if "TRITON_INTERPRET" in environ:
        return False
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    count = count_gpus() if gpu_count is None else gpu_count
    if count > 0 and visible not in ("", "-1"):
        return False
    environ["TRITON_INTERPRET"] = "1"
    environ.setdefault("MUSE_KERNELS", "0")
    return True


def hear_stop_signal() -> None:
    """Under ``muse verify``, make SIGINT raise KeyboardInterrupt even where this process started with it ignored
    (a shell starts background jobs so), since SIGINT is how ``muse verify`` stops the suite and has each worker
    write what it checked. Workers started from here then inherit the default and install the same handler."""
    if (os.environ.get(RECORD_DIR_ENV) and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    pin_worker_gpu()
    interpret_without_gpu()
    hear_stop_signal()
    if not config.getoption("hypothesis_profile", default=None):
        settings.load_profile(os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")


def selected_devices(config: pytest.Config) -> list[str]:
    """Devices for the ``device`` parameter: the option, else $MUSE_VERIFY_DEVICE, else all available."""
    choice = config.getoption("muse_device", default=None) or os.environ.get(DEVICE_ENV) or "all"
    if choice not in DEVICE_CHOICES:
        raise pytest.UsageError(f"{DEVICE_ENV} must be one of {DEVICE_CHOICES}, got {choice!r}")
    import torch

    has_cuda = torch.cuda.is_available()
    if choice == "cpu":
        return ["cpu"]
    if choice == "cuda":
        return ["cuda"] if has_cuda else []
    return ["cpu", "cuda"] if has_cuda else ["cpu"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise every test that takes ``device`` (in tests/ and verification/) over the selected
    devices; cuda cases are marked ``cuda``."""
    if "device" not in metafunc.fixturenames:
        return
    params = [pytest.param(d, id=d, marks=[pytest.mark.cuda] if d == "cuda" else [])
              for d in selected_devices(metafunc.config)]
    metafunc.parametrize("device", params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The tests selected to run, without xdist (under xdist the controller collects nothing)."""
    if _records_here():
        _COLLECTED.update(item.nodeid for item in session.items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """The tests a worker selected (xdist): with the outcomes, what an interrupted run left unfinished."""
    if _records_here():
        _COLLECTED.update(ids)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect outcomes in the controller (xdist forwards worker reports to it)."""
    if not _records_here():
        return
    if report.when != "call" and not (report.failed or report.skipped):
        return
    if report.when == "teardown" and report.skipped:
        return
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    text = ""
    if report.failed:
        text = str(report.longreprtext)[-4000:]
    elif outcome == "xfailed":
        text = str(report.wasxfail)
    elif report.skipped and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    node = getattr(report, "node", None)  # xdist: the WorkerController that ran the test
    worker = getattr(getattr(node, "gateway", None), "id", None) or "main"
    _OUTCOMES.append({"nodeid": report.nodeid, "when": report.when, "outcome": outcome,
                      "duration": round(report.duration, 4), "message": text, "worker": worker})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        return
    import torch

    STORE.environment.update({
        "worker": worker_id(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "caller_CUDA_VISIBLE_DEVICES": os.environ.get("MUSE_CALLER_CUDA_VISIBLE_DEVICES", "<unset>"),
        "hypothesis_profile": profile_name(),
        "torch": torch.__version__,
    })
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        props = torch.cuda.get_device_properties(0)
        STORE.environment["cuda_device"] = f"{props.name} ({getattr(props, 'uuid', '')})"
    STORE.flush(directory)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        path = Path(directory) / "outcomes.json"
        from muse._io import write_json  # lazily: torch loads only after GPU pinning

        write_json(path, {"exitstatus": int(exitstatus), "tests": _OUTCOMES, "collected": sorted(_COLLECTED)},
                   indent=1)


__all__ = ["DEFAULT_PROFILE", "PROFILES", "PROFILE_ENV", "count_gpus", "examples", "gpu_for_worker", "hear_stop_signal",
           "interpret_without_gpu", "pin_worker_gpu", "profile_name", "register_profiles", "selected_devices"]
