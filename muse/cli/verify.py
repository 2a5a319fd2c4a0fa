"""``muse verify``: run the numerics verification suite and write the numerics report."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PROFILES = ("ci", "dev", "thorough")
DEVICES = ("cpu", "cuda", "all")

EPILOG = """examples:
  muse verify                                  # ci profile, every available device, -n auto
  muse verify --profile thorough --device cuda --out runs/verify-thorough
  muse verify --device cpu -n 2 -k "matmul or layer_norm"

The report (report.json, report.md, errors.png) lands in --out; the exit status is
1 when any test fails or any op exceeds its bound, 2 when the run was stopped
(--time-limit, Ctrl-C) before every selected test finished and nothing failed.
"""

GRACE_S = 60.0  # after the stop signal, how long the suite may take to write its records before it is killed


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="run the numerics verification suite and write the report",
        description="Run the numerics verification suite and write the numerics report.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_group = p.add_argument_group("what to run")
    run_group.add_argument("--profile", choices=PROFILES, default="ci",
                           help="Hypothesis profile: ci (100 examples/op, derandomized), dev, thorough (10,000)")
    run_group.add_argument("--device", choices=DEVICES, default="all",
                           help="devices to verify (all = cpu plus cuda when available)")
    run_group.add_argument("-n", "--workers", default="auto",
                           help="pytest-xdist workers: 'auto', or a count (0 = no xdist)")
    run_group.add_argument("-k", dest="keyword", default=None, help="pytest -k expression to select tests")
    run_group.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                           help="stop the suite after SECONDS and report what finished; the verdict is then "
                                "INCOMPLETE (exit 2) unless something failed")
    out_group = p.add_argument_group("output")
    out_group.add_argument("--out", type=Path, default=None,
                           help="report directory (default runs/verify-<timestamp>)")
    p.set_defaults(func=run)


def parse_workers(value) -> str:
    """'auto' or a non-negative integer count, as the string pytest-xdist takes."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"workers must be 'auto' or an int, got {type(value).__name__}")
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"workers must be 'auto' or a non-negative integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"workers must be >= 0, got {n}")
    return str(n)


def resolve_devices(device: str, cuda_available: bool) -> list[str]:
    """The devices a run covers; ValueError if cuda is requested without a GPU."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string, got {type(device).__name__}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not cuda_available:
        raise ValueError("--device cuda was requested but torch.cuda.is_available() is False")
    if device == "cpu":
        return ["cpu"]
    if device == "cuda":
        return ["cuda"]
    return ["cpu", "cuda"] if cuda_available else ["cpu"]


def suite_path() -> Path:
    """The directory of the installed ``verification`` package (found via a module: an editable
    install made before the package had an ``__init__.py`` maps it as a namespace)."""
    import verification.plugin

    return Path(verification.plugin.__file__).resolve().parent


def pytest_command(profile: str, device: str, workers: str, keyword: str | None = None) -> list[str]:
    """The pytest command line for a run (xdist only when workers != '0')."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    workers = parse_workers(workers)
    cmd = [sys.executable, "-m", "pytest", str(suite_path()), "-p", "verification.plugin",
           "-p", "no:cacheprovider", f"--hypothesis-profile={profile}", f"--muse-device={device}",
           "-q", "-rfEx"]
    if workers != "0":
        cmd += ["-n", workers]
    if keyword:
        cmd += ["-k", keyword]
    return cmd


def _git_hash(root: Path) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    res = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    dirty = subprocess.run([git, "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=False)
    h = res.stdout.strip() or "unknown"
    return h + ("+dirty" if dirty.stdout.strip() else "")


def _environment(devices: list[str]) -> dict:
    import torch

    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if "cuda" in devices:
        env["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cuda_runtime"] = torch.version.cuda
    return env


def parse_time_limit(value) -> float | None:
    """None, or a positive finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"time_limit must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {value!r}")
    return float(value)


def run_suite(cmd: list[str], cwd: Path, env: dict, log_path: Path, time_limit: float | None) -> tuple[int, bool]:
    """Run the pytest command, echoing and logging its output; at ``time_limit`` seconds send SIGINT to its
    process group (the xdist workers too, so each writes the records it has), SIGKILL after ``GRACE_S`` more.
    Ctrl-C, SIGTERM and SIGHUP are passed on as SIGINT. Returns (exit status, whether the limit stopped it)."""
    stopped = threading.Event()
    killer = threading.Timer(GRACE_S, lambda: signal_group(signal.SIGKILL))
    killer.daemon = True

    def signal_group(sig: int) -> None:
        if proc.returncode is None:  # never a reaped group: its id may belong to another process by now
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop() -> None:
        stopped.set()
        signal_group(signal.SIGINT)
        killer.start()

    with open(log_path, "w") as log:
        # its own process group, so one signal reaches every worker; Ctrl-C here is passed on below
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        timer = threading.Timer(time_limit, stop) if time_limit else None
        if timer:
            timer.daemon = True
            timer.start()
        # SIGTERM (e.g. from timeout(1)) and SIGHUP stop the suite as Ctrl-C does, so the report is still written
        passed_on = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
        old_handlers = ({sig: signal.signal(sig, lambda *_: signal_group(signal.SIGINT)) for sig in passed_on}
                        if threading.current_thread() is threading.main_thread() else {})
        try:
            while True:
                try:
                    for line in proc.stdout:
                        sys.stdout.write(line)
                        log.write(line)
                        log.flush()
                    break
                except KeyboardInterrupt:
                    signal_group(signal.SIGINT)
            rc = proc.wait()
        finally:
            if timer:
                timer.cancel()
            killer.cancel()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
    return rc, stopped.is_set()


def run(args: argparse.Namespace) -> int:
    import torch

    from verification.plugin import DEVICE_ENV, PROFILE_ENV
    from verification.record import RECORD_DIR_ENV
    from verification.report import build_report, render_markdown, write_report

    time_limit = parse_time_limit(getattr(args, "time_limit", None))
    devices = resolve_devices(args.device, torch.cuda.is_available())
    cmd = pytest_command(args.profile, args.device, args.workers, args.keyword)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("runs") / f"verify-{stamp}"
    records = out / "records"
    if records.exists():
        shutil.rmtree(records)
    records.mkdir(parents=True)
    # A run started from inside pytest (e.g. an xdist worker) must not look like a worker itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}
    env.update({RECORD_DIR_ENV: str(records.resolve()), PROFILE_ENV: args.profile, DEVICE_ENV: args.device})
    root = suite_path().parent
    print(f"muse verify: profile={args.profile} devices={','.join(devices)} workers={args.workers} -> {out}")
    print(" ".join(cmd), flush=True)
    start = time.time()
    rc, timed_out = run_suite(cmd, root, env, out / "pytest.log", time_limit)
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "profile": args.profile,
            "devices": devices, "workers": args.workers, "keyword": args.keyword, "git": _git_hash(root),
            "command": " ".join(cmd), "pytest_exit": rc, "duration_s": round(time.time() - start, 1),
            "time_limit_s": time_limit, "timed_out": timed_out, **_environment(devices)}
    report = build_report(records, meta)
    paths = write_report(report, out)
    print()
    print(render_markdown(report))
    print(f"report: {paths['markdown']}  {paths['json']}  {paths['png']}")
    if report["verdict"] == "INCOMPLETE":
        return 2
    if rc not in (0, 1):
        return rc
    return 0 if report["passed"] and rc == 0 else 1
