"""The numerics report of ``muse verify``: merge per-worker records into JSON, Markdown and a PNG.

Per op and device: the number of checked component values ("cases"), the max error
in ULPs, its bound (a number, or "mixed" for per-element bounds, with the largest
per-element bound seen), max error/bound, pass/fail and the worst input.  Properties
without a ULP bound (gradients, finiteness, stability, zeta) and the pytest outcomes
are listed after the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from muse._io import atomic_write_text, write_report_json
from verification.record import COMPILE_COUNTERS, RATIO_EDGES, ULP_EDGES

BOUND_TEXT = {
    "add": "0.5 (correctly rounded)", "sub": "0.5 (correctly rounded)", "mul_real": "0.5",
    "mul": "0.5 + 2^-12", "abs2": "0.5 + 2^-12", "abs": "0.5 + 1.5*2^-12", "div": "0.5 + 3*2^-12",
    "angle": "0.5 + k_atan2*2^-12", "exp": "0.5 + (2k_exp + 2k_cos + 1)*2^-12",
    "polar": "0.5 + (2k_cos + 1)*2^-12", "dropout": "0.5 + 3*2^-12",
    "matmul": "0.5 ulp(|x|+E) + E, E = gamma_m(2K) sum|p|", "matmul_real": "0.5 ulp(|x|+E) + E, E = gamma_m(K) sum|p|",
    "linear": "0.5 ulp(|x|+E) + E, E = gamma_m(2K+1)(sum|p| + |b|)",
    "sum": "0.5 ulp(|x|+E) + E, E = gamma_(n-1) sum|z|", "mean": "0.5 ulp(|x|+E) + E, E = gamma_(n+1) sum|z|/n",
    "layer_norm": "mixed (LayerNorm section)", "modrelu": "mixed, ~1.5u|b| near |z| = -b",
    "embedding": "mixed (one fp32 evaluation)", "position_table": "0.5 ulp(|x|+E) + E (fp64 table)",
    "complex_diag_scan": "0.5 ulp(|x|+E) + E, E = gamma_(4L+2n_c+19) M_t",
    "linear_grad_x": "0.5 ulp(|x|+E) + E, E = gamma_m(2 out) sum|p|",
    "linear_grad_weight": "block form: ulp(S+E) + E + 0.5 ulp, E = gamma_m(2 rows) sum|p|; kernel: one rounding",
    "linear_grad_bias": "0.5 ulp(|x|+E) + E, E = gamma_(rows-1) sum|dy|",
    "complex_diag_scan_grad_x": "0.5 ulp(|x|+E) + E, E = gamma_(4L+2n_c+19) M'_s (reversed scale)",
    "modrelu_grad_x": "0.5 ulp(|x|+E) + E, E per element (modReLU gradient, docs/numerics.md)",
}


def _merge_op(a: dict, b: dict) -> dict:
    out = dict(a)
    for k in ("cases", "checks", "bad"):
        out[k] = a[k] + b[k]
    for k in ("max_ulp", "max_bound_ulp"):
        out[k] = max(_num(a[k]), _num(b[k]))
    if a.get("bound_ulp") is None or b.get("bound_ulp") is None:
        out["bound_ulp"] = None
    if b.get("worst") is not None and (a.get("worst") is None or _num(b["max_ratio"]) >= _num(a["max_ratio"])):
        out["worst"] = b["worst"]
    out["max_ratio"] = max(_num(a["max_ratio"]), _num(b["max_ratio"]))
    for k in ("ulp_hist", "ratio_hist"):
        out[k] = [x + y for x, y in zip(a[k], b[k], strict=True)]
    out["tests"] = sorted(set(a["tests"]) | set(b["tests"]))
    return out


def _merge_property(a: dict, b: dict) -> dict:
    out = dict(a)
    out["checks"] = a["checks"] + b["checks"]
    out["failed"] = a["failed"] + b["failed"]
    metrics = dict(a["metrics"])
    for k, v in b["metrics"].items():
        old = metrics.get(k)
        if isinstance(v, (int, float)) and isinstance(old, (int, float)):
            v = min(old, v) if k.startswith("min") else max(old, v) if k.startswith("max") else v
        metrics[k] = v
    out["metrics"] = metrics
    out["tests"] = sorted(set(a["tests"]) | set(b["tests"]))
    return out


def _num(v) -> float:
    """Undo the JSON encoding of non-finite floats ('inf', 'nan')."""
    return float(v) if isinstance(v, str) else v


def load_records(record_dir: str | Path) -> dict:
    """Merge every worker file in ``record_dir`` (plus outcomes.json) into one dict."""
    record_dir = Path(record_dir)
    if not record_dir.is_dir():
        raise ValueError(f"record directory {record_dir} does not exist")
    ops: dict[tuple[str, str], dict] = {}
    props: dict[tuple[str, str], dict] = {}
    environments, compiles = [], []
    workers = set()
    for path in sorted(record_dir.glob("*.json")):
        if path.name == "outcomes.json":
            continue
        data = json.loads(path.read_text())
        workers.add(data.get("worker", path.stem))
        environments.append(data.get("environment", {}))
        if data.get("compile"):
            compiles.append({"worker": data.get("worker", path.stem), **data["compile"]})
        for entry in data.get("ops", []):
            key = (entry["op"], entry["device"])
            ops[key] = _merge_op(ops[key], entry) if key in ops else entry
        for entry in data.get("properties", []):
            key = (entry["name"], entry["device"])
            props[key] = _merge_property(props[key], entry) if key in props else entry
    outcomes_path = record_dir / "outcomes.json"
    outcomes = json.loads(outcomes_path.read_text()) if outcomes_path.exists() else {"exitstatus": None, "tests": []}
    outcomes.setdefault("collected", [])
    ran = {t.get("worker", "main") for t in outcomes["tests"]}
    return {"ops": [ops[k] for k in sorted(ops)], "properties": [props[k] for k in sorted(props)],
            "environments": environments, "compile": compiles, "outcomes": outcomes,
            "missing_workers": sorted(ran - workers)}


def build_report(record_dir: str | Path, meta: dict | None = None) -> dict:
    """The report dict: meta, per-op rows, properties, test summary and overall pass/fail."""
    data = load_records(record_dir)
    rows = []
    for e in data["ops"]:
        rows.append({
            "op": e["op"], "device": e["device"], "cases": e["cases"], "checks": e["checks"],
            "max_ulp": _num(e["max_ulp"]), "bound_ulp": e["bound_ulp"],
            "bound_text": BOUND_TEXT.get(e["op"], "see docs/numerics.md"),
            "max_bound_ulp": _num(e["max_bound_ulp"]), "max_ratio": _num(e["max_ratio"]),
            "bad": e["bad"], "passed": e["bad"] == 0, "worst": e["worst"],
            "ulp_hist": e["ulp_hist"], "ratio_hist": e["ratio_hist"], "tests": e["tests"],
        })
    tests = data["outcomes"]["tests"]
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    failures = [t for t in tests if t["outcome"] in ("failed", "xpassed")]
    exitstatus = data["outcomes"]["exitstatus"]
    if exitstatus is None and meta and meta.get("pytest_exit") is not None:
        exitstatus = meta["pytest_exit"]  # the suite never wrote its outcomes (killed): its own exit status
    interrupted = exitstatus == 2 or bool(meta and meta.get("timed_out"))
    missing = data["missing_workers"]  # a worker whose records never arrived: its measurements are lost
    finished = {t["nodeid"] for t in tests}
    unfinished = [n for n in data["outcomes"]["collected"] if n not in finished]  # e.g. stopped by --time-limit
    passed = (all(r["passed"] for r in rows) and not failures and exitstatus in (0, None) and not missing
              and not unfinished)
    failed = (not all(r["passed"] for r in rows)) or bool(failures) or bool(missing)
    if passed:
        verdict = "PASS"
    elif not failed and (unfinished or interrupted):  # nothing failed, but not everything ran
        verdict = "INCOMPLETE"
    else:
        verdict = "FAIL"
    props = [{**p, "passed": p["failed"] == 0} for p in data["properties"]]
    return {"meta": meta or {}, "passed": passed, "verdict": verdict, "ops": rows, "properties": props,
            "missing_workers": missing, "unfinished": unfinished,
            "tests": {"counts": counts, "exitstatus": exitstatus, "failures": failures,
                      "xfailed": [t for t in tests if t["outcome"] == "xfailed"]},
            "environments": data["environments"], "compile": data["compile"], "ulp_edges": ULP_EDGES.tolist(),
            "ratio_edges": RATIO_EDGES.tolist()}


def _fmt(v, digits: int = 6) -> str:
    if v is None:
        return "mixed"
    v = float(v)
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}g}"


def render_markdown(report: dict) -> str:
    """The Markdown summary: verdict, per-op table, properties, failures."""
    meta = report["meta"]
    verdict = report.get("verdict", "PASS" if report["passed"] else "FAIL")
    lines = [f"# MUSE numerics report: {verdict}", ""]
    if report.get("missing_workers"):
        lines += [f"**Records missing from workers {report['missing_workers']}: their measurements are not in "
                  "this report.**", ""]
    unfinished = report.get("unfinished", [])
    if unfinished or verdict == "INCOMPLETE":
        limit = meta.get("time_limit_s")
        why = f" (stopped at the time limit, {limit:g} s)" if meta.get("timed_out") and limit else ""
        head = (f"{len(unfinished)} selected test(s) did not finish{why}" if unfinished else
                f"the suite stopped{why} before it wrote its outcomes, so which tests finished is unknown")
        lines += [f"**{head}; the rows below hold only what was checked before the stop:**", ""]
        lines += [f"- {n}" for n in unfinished[:40]]
        if len(unfinished) > 40:
            lines.append(f"- … and {len(unfinished) - 40} more")
        lines.append("")
    for k in ("date", "profile", "devices", "git", "torch", "cpu_capability", "cuda_devices", "duration_s"):
        if k in meta:
            lines.append(f"- {k}: {meta[k]}")
    lines += ["", "## Accuracy per op (errors in ULPs of the exact result)", "",
              "| op | device | cases | max error | bound | max err/bound | pass | worst input |",
              "|---|---|---:|---:|---|---:|---|---|"]
    for r in report["ops"]:
        bound = _fmt(r["bound_ulp"]) if r["bound_ulp"] is not None else f"mixed (<= {_fmt(r['max_bound_ulp'], 4)} here)"
        worst = r["worst"] or {}
        w = f"{worst.get('index', '')}: {worst.get('inputs', '')}".replace("|", "\\|")
        if len(w) > 120:
            w = w[:117] + "..."
        lines.append(f"| {r['op']} | {r['device']} | {r['cases']} | {_fmt(r['max_ulp'])} | {bound} | "
                     f"{_fmt(r['max_ratio'], 4)} | {'yes' if r['passed'] else '**NO**'} | {w} |")
    if report["properties"]:
        lines += ["", "## Properties", "", "| property | device | checks | failed | metrics |", "|---|---|---:|---:|---|"]
        for p in report["properties"]:
            m = ", ".join(f"{k}={_fmt(v, 4) if isinstance(v, (int, float)) else v}" for k, v in p["metrics"].items())
            lines.append(f"| {p['name']} | {p['device']} | {p['checks']} | {p['failed']} | {m} |")
    t = report["tests"]
    lines += ["", "## Tests", "", ", ".join(f"{k}: {v}" for k, v in sorted(t["counts"].items())) or "no outcomes"]
    for f in t["failures"]:
        lines += ["", f"### {f['outcome'].upper()} {f['nodeid']}", "", "```", f["message"][-2000:], "```"]
    for x in t["xfailed"]:
        lines.append(f"- xfailed {x['nodeid']}: {x['message']}")
    if report.get("compile"):
        names = [name for name, _, _ in COMPILE_COUNTERS]
        lines += ["", "## torch.compile per worker (graphs; inductor FX graph and AOTAutograd cache hits and misses)",
                  "", "| worker | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for c in report["compile"]:
            lines.append(f"| {c['worker']} | " + " | ".join(str(c.get(n, 0)) for n in names) + " |")
    workers = [e for e in report.get("environments", []) if e.get("worker", "main") != "main"]
    if workers:
        lines += ["", "## Workers (xdist GPU pinning)", "", "| worker | CUDA_VISIBLE_DEVICES | CUDA device |",
                  "|---|---|---|"]
        for e in sorted(workers, key=lambda e: int(e["worker"].lstrip("gw") or 0)):
            lines.append(f"| {e['worker']} | {e.get('CUDA_VISIBLE_DEVICES')} | {e.get('cuda_device', 'none')} |")
    return "\n".join(lines) + "\n"


def plot_errors(report: dict, path: str | Path) -> Path:
    """PNG of per-op ULP error histograms (one panel per op, one line per device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = sorted({r["op"] for r in report["ops"]})
    n = max(len(ops), 1)
    cols = min(4, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.0 * rows_n), squeeze=False)
    edges = np.asarray(report["ulp_edges"])
    centers = np.log2(np.concatenate([[2.0**-21], edges[1:]]))  # bin i drawn at log2 of its lower edge
    for ax, op in zip(axes.ravel(), ops, strict=False):
        for r in (r for r in report["ops"] if r["op"] == op):
            h = np.asarray(r["ulp_hist"], dtype=float)
            frac = h / max(h.sum(), 1)
            ax.step(centers, frac, where="post", label=f"{r['device']} (n={r['cases']})")
            if r["bound_ulp"] is not None:
                ax.axvline(np.log2(r["bound_ulp"]), color="red", lw=0.8, ls="--")
        ax.set_title(op, fontsize=9)
        ax.set_xlabel("log2(error in ULPs); first bin = error < 2^-20", fontsize=7)
        ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("fraction of cases", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in axes.ravel()[len(ops):]:
        ax.axis("off")
    fig.suptitle("Per-op error distributions (red dashed: constant bound)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and errors.png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "png": out / "errors.png"}
    write_report_json(paths["json"], report, default=str)
    atomic_write_text(paths["markdown"], render_markdown(report))
    plot_errors(report, paths["png"])
    return paths


__all__ = ["BOUND_TEXT", "build_report", "load_records", "plot_errors", "render_markdown", "write_report"]
