"""Tests of the suite's own helpers: ULPs, mpf -> fp16 rounding, the checker (it must be able to
fail), the Hypothesis profiles, the GPU pinning arithmetic, the report and ``muse verify``."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from muse.cli import verify as cli
from verification import bounds as B
from verification import reference as R
from verification import strategies as vs
from verification.checks import check_ulps, cplx
from verification.plugin import PROFILES, gpu_for_worker, pin_worker_gpu
from verification.record import Store, record_property, worker_id
from verification.report import build_report, render_markdown, write_report
from verification.ulp import F16, F32, ulp, ulp_distance, ulp_error, ulp_of_exact

TINY = 2.0**-24


# ------------------------------------------------------------------------ ULPs
@pytest.mark.parametrize(("x", "want"), [
    (0.0, TINY), (-0.0, TINY), (TINY, TINY), (2.0**-15, TINY), (2.0**-14, TINY), (1.5 * 2.0**-14, TINY),
    (2.0**-13, 2.0**-23), (1.0, 2.0**-10), (-1.0, 2.0**-10), (1.999, 2.0**-10), (2.0, 2.0**-9),
    (1024.0, 1.0), (65504.0, 32.0), (65536.0, 64.0),
])
def test_ulp16_hand_checked(x, want):
    assert ulp(x, F16) == want


def test_ulp32_and_specials():
    assert ulp(1.0, F32) == 2.0**-23
    assert ulp(0.0, F32) == 2.0**-149
    assert ulp(2.0**-126, F32) == 2.0**-149
    assert np.isnan(ulp(math.inf, F16)) and np.isnan(ulp(math.nan, F16))


def test_ulp_of_exact_just_below_a_power_of_two():
    assert ulp_of_exact(1.0, -2.0**-60, F16) == 2.0**-11
    assert ulp_of_exact(1.0, 2.0**-60, F16) == 2.0**-10
    assert ulp_of_exact(2.0**-14, -2.0**-70, F16) == TINY  # subnormal spacing does not halve


@pytest.mark.parametrize(("got", "hi", "want"), [
    (-0.0, 0.0, 0.0), (0.0, -0.0, 0.0),  # signed zeros are equal for accuracy
    (1.0 + 2.0**-10, 1.0, 1.0), (TINY, 0.0, 1.0), (65504.0, 65519.0, 15 / 32),
    (math.inf, 70000.0, 0.0),  # exact value rounds to inf: no error
    (math.inf, 65504.0, 1.0),  # inf counts as 65536: (65536 - 65504) / 32
    (-math.inf, 70000.0, (70000 + 65536) / 64), (math.nan, 1.0, math.inf), (1.0, math.nan, math.inf),
    (math.nan, math.nan, 0.0), (math.inf, math.inf, 0.0), (-math.inf, math.inf, math.inf),
])
def test_ulp_error_hand_checked(got, hi, want):
    assert ulp_error(got, hi, 0.0, F16) == want


def test_ulp_distance():
    assert ulp_distance(1.0, float(np.nextafter(np.float16(1), np.float16(2))), F16) == 1
    assert ulp_distance(-0.0, 0.0, F16) == 0
    assert ulp_distance(TINY, -TINY, F16) == 2
    assert ulp_distance(65504.0, math.inf, F16) == 1
    with pytest.raises(ValueError):
        ulp_distance(0.1, 0.0, F16)


# -------------------------------------------------------------------- rounding
@given(x=st.floats(allow_nan=True, allow_infinity=True))
@example(x=65519.99999999999)
@example(x=65520.0)
@example(x=2.0**-25)  # tie between 0 and the smallest subnormal -> 0 (even)
@example(x=3 * 2.0**-25)  # tie between 2**-24 and 2**-23 -> 2**-23 (even)
@example(x=1 + 2.0**-11)  # tie -> 1 (even)
@example(x=1 + 3 * 2.0**-11)  # tie -> 1 + 2**-9 (even)
@example(x=-(2.0**-14 - 2.0**-25))  # tie at the normal boundary -> -2**-14
@settings(max_examples=2000)
def test_round_to_fp16_matches_numpy(x):
    """mpf(x) is exact for a float64 x, and numpy's float64 -> float16 is a correct single rounding."""
    with np.errstate(over="ignore"):
        want = float(np.float16(x))
    got = R.round_to_format(x, F16)
    if math.isnan(want):
        assert math.isnan(got)
        return
    assert got == want
    assert math.copysign(1, got) == math.copysign(1, want) or x == 0


@given(x=st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=1000)
def test_round_to_fp32_matches_numpy(x):
    with np.errstate(over="ignore"):
        assert R.round_to_format(x, F32) == float(np.float32(x))


@given(a=st.floats(width=16, allow_nan=False, allow_infinity=False))
def test_midpoints_round_to_even(a):
    """Exact midpoints between neighbouring fp16 numbers round to the even one (numpy agrees)."""
    if abs(a) == vs.MAX_F16:
        return
    b = float(np.nextafter(np.float16(a), np.float16(np.inf)))
    mid = (a + b) / 2  # exact in float64
    assert R.round_to_format(mid, F16) == float(np.float16(mid))


def test_rounding_from_mpf_avoids_double_rounding():
    """1 + 2**-11 + 2**-80 is just above a tie: rounding straight from the mpf goes up, while
    rounding via float64 (which drops the 2**-80) would tie to even and go down."""
    with mpmath.workdps(50):
        x = 1 + mpmath.mpf(2) ** -11 + mpmath.mpf(2) ** -80
    assert R.round_to_format(x, F16) == 1 + 2.0**-10
    assert float(np.float16(float(x))) == 1.0


def test_split_is_double_double():
    with mpmath.workdps(50):
        x = mpmath.mpf(1) / 3
        hi, lo = R.split(x)
        assert abs((mpmath.mpf(hi) + lo) - x) <= abs(x) * mpmath.mpf(2) ** -105
    assert hi == 1 / 3


def test_reference_values_hand_checked():
    a = np.array([[3.0], [4.0]], dtype=np.float16)
    assert float(R.abs_(a).f16[0]) == 5.0
    assert float(R.abs2(np.array([[300.0], [400.0]], dtype=np.float16)).f16[0]) == math.inf
    re, im = R.mul(a, a)  # (3 + 4i)^2 = -7 + 24i
    assert (float(re.f16[0]), float(im.f16[0])) == (-7.0, 24.0)
    neg_zero = np.array([[-1.0], [-0.0]], dtype=np.float16)
    assert float(R.angle(neg_zero).f16[0]) == -float(np.float16(math.pi))


# ------------------------------------------------- the checker must be able to fail
def _fp16_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A deliberately wrong complex mul: every product and sum rounded to fp16 (no fp32)."""
    ar, ai, br, bi = a[0], a[1], b[0], b[1]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.stack((ar * br - ai * bi, ar * bi + ai * br)).astype(np.float16)


def test_checker_flags_pure_fp16_complex_mul():
    a, b = vs.grid_pairs(32)
    got = _fp16_mul(a, b)
    exact = R.mul(a, b)
    with pytest.raises(AssertionError) as info:
        check_ulps("wrong_fp16_mul", "cpu", [got[0], got[1]], exact, B.ulp_bound("mul"),
                   args=[cplx("a", a), cplx("b", b)], record=False,
                   call="C.mul(C.ComplexTensor(torch.from_numpy(a)), C.ComplexTensor(torch.from_numpy(b)))")
    msg = str(info.value)
    assert "out of" in msg and "bad" in msg and "repro" in msg and "np.array(" in msg
    assert "=> got" in msg and "!= wanted" in msg


def test_checker_flags_fp16_accumulated_matmul():
    """A GEMM accumulating in fp16 breaks the mixed bound for long rows."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, (2, 2, 256)).astype(np.float16)
    b = rng.uniform(0.5, 1.0, (2, 256, 2)).astype(np.float16)
    re_ex, im_ex, abs_sums = R.matmul(a, b)
    acc = np.zeros((2, 2, 2), dtype=np.float16)
    for k in range(256):
        ar, ai, br, bi = a[0][:, k:k + 1], a[1][:, k:k + 1], b[0][k:k + 1], b[1][k:k + 1]
        acc = np.stack((acc[0] + (ar * br - ai * bi), acc[1] + (ar * bi + ai * br))).astype(np.float16)
    err = B.gemm_abs(abs_sums, 512)
    bound = [B.in_ulps(B.mixed(e.hi, err[c]), e.hi) for c, e in enumerate((re_ex, im_ex))]
    with pytest.raises(AssertionError, match="out of"):
        check_ulps("wrong_fp16_matmul", "cpu", [acc[0], acc[1]], [re_ex, im_ex], bound, record=False)


def test_checker_passes_the_correct_rounding_and_records():
    store = Store()
    a, b = vs.grid_pairs(8)
    exact = R.mul(a, b)
    check_ulps("mul", "cpu", [exact[0].f16, exact[1].f16], exact, 0.5, args=[cplx("a", a)], store=store)
    entry = store.ops[("mul", "cpu")]
    assert entry["bad"] == 0 and entry["max_ulp"] <= 0.5 and entry["cases"] == 2 * a.shape[1]


def test_records_reach_disk_while_the_session_runs(tmp_path, monkeypatch):
    """With a record directory, a worker rewrites its record file at most every FLUSH_EVERY_S seconds as records
    arrive (whole files only), so a worker killed mid-test leaves what it checked; without one nothing is written."""
    from verification import record

    monkeypatch.setenv(record.RECORD_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(record, "FLUSH_EVERY_S", 3600.0)
    store = Store()
    store.add_property("probe", "cpu", True, max_error_over_tol=0.25)
    assert not list(tmp_path.iterdir())  # within the interval: nothing yet
    monkeypatch.setattr(record, "FLUSH_EVERY_S", 0.0)
    store.add_property("probe", "cpu", True, max_error_over_tol=0.5)
    written = json.loads((tmp_path / f"{worker_id()}.json").read_text())
    assert [(p["name"], p["checks"], p["metrics"]["max_error_over_tol"]) for p in written["properties"]] == [
        ("probe", 2, 0.5)]
    assert sorted(x.name for x in tmp_path.iterdir()) == [f"{worker_id()}.json"]  # no half-written file left
    monkeypatch.delenv(record.RECORD_DIR_ENV)
    Store().add_property("elsewhere", "cpu", True)
    assert sorted(x.name for x in tmp_path.iterdir()) == [f"{worker_id()}.json"]


def test_records_and_report_carry_the_compile_counters(tmp_path):
    """A worker's record file holds its torch.compile graph and cache counters (none before torch.compile ran), and
    the report lists them per worker: whether a run reused an earlier run's compile caches."""
    from torch._dynamo.utils import counters

    from verification import record

    saved = {g: dict(counters[g]) for g in ("stats", "inductor", "aot_autograd")}
    try:
        for g in saved:
            counters[g].clear()
        assert record.compile_counts() == {}
        counters["stats"]["unique_graphs"] += 3
        counters["inductor"]["fxgraph_cache_hit"] += 2
        counters["inductor"]["fxgraph_cache_miss"] += 1
        counters["aot_autograd"]["autograd_cache_miss"] += 1
        store = Store()
        store.add_property("probe", "cpu", True)
        store.flush(tmp_path)
    finally:
        for g, kept in saved.items():
            counters[g].clear()
            counters[g].update(kept)
    written = json.loads((tmp_path / f"{worker_id()}.json").read_text())
    assert written["compile"] == {"graphs": 3, "fx_cache_hit": 2, "fx_cache_miss": 1, "fx_cache_bypass": 0,
                                  "aot_cache_hit": 0, "aot_cache_miss": 1}
    report = build_report(tmp_path)
    assert report["compile"] == [{"worker": worker_id(), **written["compile"]}]
    md = render_markdown(report)
    assert "## torch.compile per worker" in md and f"| {worker_id()} | 3 | 2 | 1 | 0 | 0 | 1 |" in md


# ---------------------------------------------------------------- bounds & profiles
def test_bounds_match_the_documented_constants():
    assert B.ulp_bound("add") == 0.5
    assert B.ulp_bound("mul") == 0.5 + 2.0**-12
    assert abs(B.ulp_bound("abs") - (0.5 + 1.5 * 2.0**-12)) < 2.0**-30
    assert abs(B.ulp_bound("div") - (0.5 + 3 * 2.0**-12)) < 2.0**-30
    assert B.ulp_bound("angle", "cpu") == 0.5 + 2 * 2.0**-12
    assert B.ulp_bound("angle", "cuda") == 0.5 + 3.5 * 2.0**-12
    assert abs(B.ulp_bound("exp", "cpu") - (0.5 + 5 * 2.0**-12)) < 2.0**-30
    assert abs(B.ulp_bound("exp", "cuda") - (0.5 + 11 * 2.0**-12)) < 2.0**-30
    assert B.gemm_terms(64, "cpu") == 64
    with pytest.raises(ValueError):
        B.ulp_bound("nope")
    with pytest.raises(ValueError):
        B.device_kind("mps")


def test_profiles():
    ci = PROFILES["ci"]
    assert ci["derandomize"] and ci["database"] is None and ci["deadline"] is None and ci["max_examples"] == 100
    assert PROFILES["thorough"]["max_examples"] >= 10_000
    assert settings.get_profile("ci").derandomize


# --------------------------------------------------------------------- GPU pinning
@pytest.mark.parametrize(("worker", "visible", "count", "want"), [
    ("gw0", None, 4, "0"), ("gw3", None, 4, "3"), ("gw5", None, 4, "1"),
    ("gw0", "1", 8, "1"),  # triton PR #11831: an outer "1" must stay physical GPU 1
    ("gw1", "2,3", 8, "3"), ("gw2", "2,3", 8, "2"), ("gw1", " 4, 5 ", 0, "5"),
    ("gw1", "GPU-aaaa,GPU-bbbb", 0, "GPU-bbbb"),
    ("gw0", "", 4, None), ("gw0", "-1", 4, None), ("gw0", None, 0, None),
    (None, "0,1", 2, None), ("main", None, 2, None),
])
def test_gpu_for_worker(worker, visible, count, want):
    assert gpu_for_worker(worker, visible, count) == want


def test_pin_worker_gpu_rewrites_a_fake_environment():
    env = {"PYTEST_XDIST_WORKER": "gw3", "CUDA_VISIBLE_DEVICES": "4,5,6"}
    assert pin_worker_gpu(env) == "4"
    assert env["CUDA_VISIBLE_DEVICES"] == "4" and env["MUSE_CALLER_CUDA_VISIBLE_DEVICES"] == "4,5,6"
    env = {"PYTEST_XDIST_WORKER": "gw1"}
    assert pin_worker_gpu(env, gpu_count=2) == "1" and env["CUDA_VISIBLE_DEVICES"] == "1"
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert pin_worker_gpu(env) is None and env == {"CUDA_VISIBLE_DEVICES": "0,1"}


# ------------------------------------------------------------------ report & CLI
def test_report_from_synthetic_records(tmp_path):
    store = Store()
    store.add_measurement("mul", "cpu", np.array([0.1, 0.5]), np.array(0.5002), 0.5002, {"index": "re[0]"})
    store.add_measurement("matmul", "cpu", np.array([3.0]), np.array([2.0]), None, {"index": "re[1]"})
    store.add_property("zeta_table", "cpu", True, max_rel_error=1e-15, atol=np.array([1.0, 2.0]),
                       odd=object())  # arrays and unknown objects must not break the JSON flush
    store.flush(tmp_path / "records")
    (tmp_path / "records" / "outcomes.json").write_text(json.dumps({"exitstatus": 1, "tests": [
        {"nodeid": "t::a", "when": "call", "outcome": "failed", "duration": 0.1, "message": "boom",
         "worker": "gw999"}]}))
    report = build_report(tmp_path / "records", {"profile": "ci"})
    assert not report["passed"] and report["missing_workers"] == ["gw999"]
    rows = {r["op"]: r for r in report["ops"]}
    assert rows["mul"]["passed"] and not rows["matmul"]["passed"] and rows["matmul"]["max_ratio"] == 1.5
    paths = write_report(report, tmp_path)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    md = render_markdown(report)
    assert "| matmul | cpu |" in md and "**NO**" in md and "FAIL" in md
    assert json.loads(paths["json"].read_text())["tests"]["counts"] == {"failed": 1}


def _outcomes(tmp_path, exitstatus, finished, collected):
    records = tmp_path / "records"
    Store().flush(records)  # this worker's (empty) records
    if exitstatus is not None:
        (records / "outcomes.json").write_text(json.dumps({"exitstatus": exitstatus, "collected": collected, "tests": [
            {"nodeid": n, "when": "call", "outcome": o, "duration": 0.1, "message": "", "worker": worker_id()}
            for n, o in finished]}))
    return records


@pytest.mark.parametrize(("exitstatus", "finished", "meta", "verdict"), [
    (0, [("t::a", "passed"), ("t::b", "passed")], {}, "PASS"),
    (2, [("t::a", "passed")], {}, "INCOMPLETE"),  # t::b never finished: stopped, nothing failed
    (2, [("t::a", "failed")], {}, "FAIL"),  # a failure outranks the stop
    (0, [("t::a", "passed")], {}, "INCOMPLETE"),  # collected but never reported
    (None, [], {"pytest_exit": -9}, "FAIL"),  # killed before writing its outcomes, no limit asked for
    (None, [], {"pytest_exit": -9, "timed_out": True, "time_limit_s": 5.0}, "INCOMPLETE"),
])
def test_report_verdict_of_a_stopped_run(tmp_path, exitstatus, finished, meta, verdict):
    """A run stopped before every selected test finished is never a PASS; it is INCOMPLETE unless something failed."""
    report = build_report(_outcomes(tmp_path, exitstatus, finished, ["t::a", "t::b"]), meta)
    assert report["verdict"] == verdict and report["passed"] == (verdict == "PASS")
    md = render_markdown(report)
    assert md.startswith(f"# MUSE numerics report: {verdict}")
    if verdict == "INCOMPLETE":
        assert "did not finish" in md or "which tests finished is unknown" in md


def test_cli_time_limit_argument():
    assert cli.parse_time_limit(None) is None and cli.parse_time_limit(30) == 30.0
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="time_limit"):
            cli.parse_time_limit(bad)
    for bad in ("30", True):
        with pytest.raises(TypeError, match="time_limit"):
            cli.parse_time_limit(bad)
    res = subprocess.run([sys.executable, "-m", "muse", "verify", "--time-limit", "-3"], capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 2 and "time_limit must be a positive number" in res.stderr, res.stderr[-2000:]


STOP_PROBE_ENV = "MUSE_VERIFY_STOP_PROBE"


def test_stop_probe_records_then_waits():
    """The test the stop tests below interrupt: it records a property, writes the file $MUSE_VERIFY_STOP_PROBE names
    (so they know it is running), then waits far longer than they do. Skipped unless that variable is set."""
    marker = os.environ.get(STOP_PROBE_ENV)
    if not marker:
        pytest.skip(f"a probe for the stop tests (runs only with {STOP_PROBE_ENV} set)")
    record_property("stop_probe", "cpu", True, max_error_over_tol=0.0)
    Path(marker).write_text("running")
    time.sleep(900)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _verify_stop_probe(out, marker, *extra, sigint_ignored: bool = False) -> subprocess.Popen:
    """muse verify running the stop probe; ``sigint_ignored`` starts it as a shell starts a background job."""
    return subprocess.Popen([sys.executable, "-m", "muse", "verify", "--device", "cpu", "-n", "1", "-k",
                             "test_stop_probe_records_then_waits", "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, STOP_PROBE_ENV: str(marker)},
                            preexec_fn=_ignore_sigint if sigint_ignored else None)


def _assert_stopped_report(out):
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "INCOMPLETE" and not report["passed"] and not report["missing_workers"]
    assert report["unfinished"] == ["verification/meta/test_helpers.py::test_stop_probe_records_then_waits"]
    assert [p["name"] for p in report["properties"]] == ["stop_probe"]  # the stopped worker's records arrived
    return report


def test_muse_verify_stops_at_its_time_limit(tmp_path):
    """--time-limit stops the xdist worker mid-test, keeps what it recorded and reports the rest as unfinished
    (exit 2, INCOMPLETE), within the grace period; also when muse verify starts with SIGINT ignored, as a shell
    starts a background job (before the plugin restored the handler, such a worker ran on until killed and its
    records were lost)."""
    # The limit must pass the worker's start, which takes longer the busier the machine is (a GPU machine's 16
    # verify workers compiling kept one run from reaching the probe in 30 s), so a run stopped before its probe
    # began says nothing of the stop and is repeated with a longer limit.
    for limit in (30, 90, 270):
        out, marker = tmp_path / f"report-{limit}", tmp_path / f"started-{limit}"
        proc = _verify_stop_probe(out, marker, "--time-limit", str(limit), sigint_ignored=True)
        log, _ = proc.communicate(timeout=limit + cli.GRACE_S + 120)
        if marker.exists():
            break
    assert proc.returncode == 2 and marker.exists(), log[-3000:]
    report = _assert_stopped_report(out)
    assert report["meta"]["timed_out"] and report["meta"]["duration_s"] < limit + cli.GRACE_S
    assert f"did not finish (stopped at the time limit, {limit} s)" in (out / "report.md").read_text()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_muse_verify_passes_a_stop_signal_on(tmp_path, sig):
    """SIGTERM (timeout(1)) and SIGINT (Ctrl-C) sent to muse verify stop its suite, which runs in a process group of
    its own, and the report is still written: INCOMPLETE, exit 2, not a report lost with the run."""
    out, marker = tmp_path / "report", tmp_path / "started"
    proc = _verify_stop_probe(out, marker)
    deadline = time.monotonic() + 180
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), "the probe never started"
    proc.send_signal(getattr(signal, sig))
    log, _ = proc.communicate(timeout=cli.GRACE_S + 60)
    assert proc.returncode == 2, log[-3000:]
    report = _assert_stopped_report(out)
    assert not report["meta"]["timed_out"]


def test_cli_argument_helpers():
    assert cli.parse_workers("auto") == "auto" and cli.parse_workers(3) == "3" and cli.parse_workers("0") == "0"
    with pytest.raises(ValueError):
        cli.parse_workers(-1)
    with pytest.raises(ValueError):
        cli.parse_workers("many")
    with pytest.raises(TypeError):
        cli.parse_workers(1.5)
    assert cli.resolve_devices("all", False) == ["cpu"] and cli.resolve_devices("all", True) == ["cpu", "cuda"]
    with pytest.raises(ValueError):
        cli.resolve_devices("cuda", False)
    with pytest.raises(ValueError):
        cli.resolve_devices("tpu", True)
    with pytest.raises(TypeError):
        cli.resolve_devices(None, True)
    cmd = cli.pytest_command("thorough", "cpu", "2", "matmul")
    assert "--hypothesis-profile=thorough" in cmd and cmd[cmd.index("-n") + 1] == "2" and "-k" in cmd
    assert "-n" not in cli.pytest_command("ci", "cpu", "0")
    with pytest.raises(ValueError):
        cli.pytest_command("fast", "cpu", "2")
    # Only verify's own parser: importing the other subcommands here would load new project modules
    # mid-session, which shifts Hypothesis' constant pool for later tests in this worker.
    parser = argparse.ArgumentParser(prog="muse")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["verify", "--profile", "dev", "--device", "cpu", "-n", "0"])
    assert (args.profile, args.device, args.workers, args.func) == ("dev", "cpu", "0", cli.run)


def test_muse_verify_end_to_end(tmp_path):
    """A tiny real run: one test selected, no xdist; the report lands in --out and the exit is 0."""
    out = tmp_path / "report"
    res = subprocess.run([sys.executable, "-m", "muse", "verify", "--device", "cpu", "-n", "0",
                          "-k", "test_conj_and_neg_are_bitwise", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["tests"]["counts"] == {"passed": 1}
    assert (out / "report.md").exists() and (out / "errors.png").exists()
