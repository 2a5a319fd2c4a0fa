"""Measurement records: every check reports here; ``muse verify`` turns them into the report.

Records are aggregated in memory per (op, device) inside each pytest process and
written to ``$MUSE_VERIFY_RECORD_DIR/<worker>.json`` (one file per xdist worker) at session
end and, while the session runs, at most every ``FLUSH_EVERY_S`` seconds after a new record,
so a worker killed mid-test (a stop that a long compile outlasts) still leaves what it checked.
Without the environment variable nothing is written, so a plain ``pytest verification`` works
the same, only without a report.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

RECORD_DIR_ENV = "MUSE_VERIFY_RECORD_DIR"
# Error histogram (ULPs): [0, 2**-20), then one bin per power of two up to 2**20, then [2**20, inf].
ULP_EDGES = np.concatenate([[0.0], 2.0 ** np.arange(-20, 21)])
# Histogram of error / bound: 20 bins on [0, 1], then (1, inf] (failures).
RATIO_EDGES = np.linspace(0.0, 1.0, 21)
FLUSH_EVERY_S = 5.0  # while a session runs, how often at most a worker rewrites its record file


def worker_id() -> str:
    """The xdist worker id (gw0, gw1, ...) or 'main'."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def current_test() -> str:
    """The running test's node id, from PYTEST_CURRENT_TEST ('' outside pytest)."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]


def histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts per bin of ``edges`` plus one final overflow bin (values >= edges[-1], inf, nan)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    idx = np.searchsorted(edges, finite, side="right") - 1
    counts = np.bincount(np.clip(idx, 0, len(edges) - 1), minlength=len(edges))
    counts[-1] += int(np.sum(~np.isfinite(v)))
    return [int(c) for c in counts]


# torch.compile's counters worth a report: graphs compiled, and hits and misses of the inductor FX graph cache and the
# AOTAutograd cache (whether a run reused an earlier run's TORCHINDUCTOR_CACHE_DIR).
COMPILE_COUNTERS = (("graphs", "stats", "unique_graphs"), ("fx_cache_hit", "inductor", "fxgraph_cache_hit"),
                    ("fx_cache_miss", "inductor", "fxgraph_cache_miss"),
                    ("fx_cache_bypass", "inductor", "fxgraph_cache_bypass"),
                    ("aot_cache_hit", "aot_autograd", "autograd_cache_hit"),
                    ("aot_cache_miss", "aot_autograd", "autograd_cache_miss"))


def compile_counts() -> dict[str, int]:
    """This process's torch.compile counters (``COMPILE_COUNTERS``; {} when torch.compile never ran): only read,
    so a run that compiles nothing does not import dynamo for them."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return {}
    counts = {name: int(utils.counters.get(group, {}).get(key, 0)) for name, group, key in COMPILE_COUNTERS}
    return counts if any(counts.values()) else {}


class Store:
    """In-process aggregate of ULP measurements and property results."""

    def __init__(self):
        self.ops: dict[tuple[str, str], dict] = {}
        self.properties: dict[tuple[str, str], dict] = {}
        self.environment: dict[str, str] = {}
        self._flushed_at = time.monotonic()

    def add_measurement(self, op: str, device: str, err: np.ndarray, bound: np.ndarray,
                        constant_bound: float | None, worst: dict | None) -> None:
        """Merge one check's per-element errors and bounds (both in ULPs) into (op, device)."""
        err = np.asarray(err, dtype=np.float64).ravel()
        bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(err == 0, 0.0, err / bound)
        ratio = np.where(np.isnan(ratio), np.inf, ratio)
        entry = self.ops.setdefault((op, device), {
            "op": op, "device": device, "cases": 0, "checks": 0, "bad": 0, "max_ulp": 0.0,
            "max_ratio": 0.0, "bound_ulp": constant_bound, "max_bound_ulp": 0.0, "worst": None,
            "ulp_hist": [0] * len(ULP_EDGES), "ratio_hist": [0] * (len(RATIO_EDGES) + 1), "tests": [],
        })
        entry["checks"] += 1
        entry["cases"] += int(err.size)
        entry["bad"] += int(np.sum(~(err <= bound)))
        if constant_bound is None:
            entry["bound_ulp"] = None
        if err.size:
            entry["max_ulp"] = max(entry["max_ulp"], float(np.max(err)))
            entry["max_bound_ulp"] = max(entry["max_bound_ulp"], float(np.max(bound)))
            top = float(np.max(ratio))
            if worst is not None and (entry["worst"] is None or top >= entry["max_ratio"]):
                entry["worst"] = worst
            entry["max_ratio"] = max(entry["max_ratio"], top)
        entry["ulp_hist"] = [a + b for a, b in zip(entry["ulp_hist"], histogram(err, ULP_EDGES), strict=True)]
        rh = histogram(np.minimum(ratio, 2.0), np.append(RATIO_EDGES, 1.0 + 1e-12))
        entry["ratio_hist"] = [a + b for a, b in zip(entry["ratio_hist"], rh, strict=True)]
        test = current_test()
        if test and test not in entry["tests"]:
            entry["tests"].append(test)
        self._flush_now_and_then()

    def add_property(self, name: str, device: str, passed: bool, **metrics) -> None:
        """Record a non-ULP property (gradients, finiteness, stability, zeta): pass/fail and metrics."""
        entry = self.properties.setdefault((name, device), {
            "name": name, "device": device, "checks": 0, "failed": 0, "metrics": {}, "tests": [],
        })
        entry["checks"] += 1
        entry["failed"] += int(not passed)
        for k, v in metrics.items():
            v = _plain(v)
            old = entry["metrics"].get(k)
            if isinstance(v, (int, float)) and isinstance(old, (int, float)) and k.startswith("max"):
                v = max(old, v)
            elif isinstance(v, (int, float)) and isinstance(old, (int, float)) and k.startswith("min"):
                v = min(old, v)
            entry["metrics"][k] = v
        test = current_test()
        if test and test not in entry["tests"]:
            entry["tests"].append(test)
        self._flush_now_and_then()

    def _flush_now_and_then(self) -> None:
        """Flush when ``FLUSH_EVERY_S`` has passed since the last write (only with a record directory)."""
        if time.monotonic() - self._flushed_at >= FLUSH_EVERY_S:
            self.flush()

    def to_json(self) -> dict:
        return {"worker": worker_id(), "ops": list(self.ops.values()),
                "properties": list(self.properties.values()), "environment": self.environment,
                "compile": compile_counts()}

    def flush(self, directory: str | os.PathLike | None = None) -> Path | None:
        """Write this process's records to ``directory`` (default: $MUSE_VERIFY_RECORD_DIR)."""
        directory = directory or os.environ.get(RECORD_DIR_ENV)
        if not directory:
            return None
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        out = path / f"{worker_id()}.json"
        part = out.with_name(out.name + ".part")  # written whole, then renamed: a kill never leaves half a file
        part.write_text(json.dumps(_plain(self.to_json()), indent=1))
        os.replace(part, out)
        self._flushed_at = time.monotonic()
        return out


def _plain(v):
    """JSON-friendly values: numpy -> Python, non-finite floats -> 'inf'/'nan', unknown types -> str."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


STORE = Store()


def record_property(name: str, device: str, passed: bool, **metrics) -> None:
    """Module-level shortcut to :meth:`Store.add_property` on the process store."""
    STORE.add_property(name, device, passed, **metrics)


__all__ = ["COMPILE_COUNTERS", "FLUSH_EVERY_S", "RATIO_EDGES", "RECORD_DIR_ENV", "STORE", "Store", "ULP_EDGES", "compile_counts", "histogram",
           "record_property", "worker_id"]
