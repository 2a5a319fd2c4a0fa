"""Run records: the JSONL log, the loss-curve PNG, results.json and the results table."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import resource
import subprocess
from pathlib import Path

import torch

from muse import kernels
from muse._io import atomic_write_text
from muse.complex import recompute


class JsonlLog:
    """Append-only JSONL records (one ``type: train`` per logged step, ``type: eval`` per eval).

    ``truncate_after(step)`` drops records beyond ``step``: a resumed run continues from its
    checkpoint, so lines an interrupted run wrote after that checkpoint are stale.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)  # nothing is created until the first write (rank 0 only writes)

    def write(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def truncate_after(self, step: int) -> None:
        kept = [r for r in self.records() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def plot_loss_curve(records: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Train and eval loss against tokens seen, as a PNG (matplotlib Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def points(kind: str) -> list[tuple]:  # non-finite losses are logged as null: not plotted
        return [(r["tokens"], r["loss"]) for r in records if r.get("type") == kind
                and isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]

    train, evals = points("train"), points("eval")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1.0)
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="eval loss", markersize=4)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def git_commit(repo: Path | None = None) -> dict:
    """HEAD commit, whether the working tree has changes, and :func:`tree_digest` (read-only git calls)."""
    repo = repo or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"commit": head, "dirty": bool(dirty), "tree_sha256": tree_digest(repo)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None, "tree_sha256": None}


def tree_digest(repo: Path | None = None) -> str:
    """sha256 over the path and bytes of every file git would carry from ``repo`` (tracked, plus untracked
    files that are not ignored), in path order.  It names the tree a run used even where HEAD is stale or
    the tree is dirty (a copy of the working tree laid over an older ``.git``): the same value on a clean
    checkout of a commit identifies it.  Raises ``subprocess.SubprocessError`` outside a git work tree."""
    repo = Path(repo or Path(__file__).resolve().parents[2])
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            capture_output=True, timeout=30, check=True).stdout
    digest = hashlib.sha256()
    for name in sorted({n for n in listed.decode("utf-8", "surrogateescape").split("\0") if n}):
        path = repo / name
        if path.is_file() and not path.is_symlink():
            digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def environment(device: torch.device) -> dict:
    """Timestamp, versions and the device name for results.json."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "device": str(device),
        "device_name": name,
        "kernels": kernels.settings(),
        "recompute_in_compile": os.environ.get(recompute.IN_COMPILE_ENV, "0"),
    }


def peak_memory(device: torch.device) -> dict:
    """CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS (labelled as such)."""
    if device.type == "cuda":
        return {"kind": "cuda max_memory_allocated", "bytes": int(torch.cuda.max_memory_allocated(device))}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"kind": "CPU process peak RSS (ru_maxrss; whole process, not tensors only)",
            "bytes": int(rss_kib) * 1024}


def results_table(results: dict) -> str:
    """A Markdown table of the headline numbers."""
    final = results.get("final_eval") or {}
    rows = [
        ("status", results["status"]),
        ("model", f"{results['model']['name']} / {results['model']['preset']}"),
        ("parameters", f"{results['model']['parameters']:,}"),
        ("device", results["environment"]["device_name"]),
        ("world size", results["world_size"] if results.get("dist_backend") is None
         else f"{results['world_size']} ({results['dist_backend']})"),
        ("train split", results["train_split"]),
        ("eval split", results["eval_split"]),
        ("steps", f"{results['steps']:,} ({results['skipped_steps']} skipped)"),
        ("tokens seen", f"{results['tokens_seen']:,}"),
        ("final eval loss", _fmt(final.get("loss"))),
        ("final eval PPL", _fmt(final.get("ppl"))),
        ("final eval bits per byte", _fmt(final.get("bits_per_byte"))),
        ("final eval word-level PPL (whole split)", _fmt(final.get("word_ppl"), ".2f")),
        ("eval tokens scored", f"{final['tokens_scored']:,}" if final else "-"),
        ("train tok/s (first step included)", _fmt(results.get("train_tokens_per_s"), ".0f")),
        ("train tok/s, steady step (compile excluded)", _fmt(results.get("steady_tokens_per_s"), ".0f")),
        ("compiled (compile s)", _compiled(results)),
        ("wall time (s)", _fmt(results["wall_time_s"], ".1f")),
        ("peak memory", f"{results['peak_memory']['bytes'] / 2**20:,.0f} MiB ({results['peak_memory']['kind']})"),
    ]
    lines = ["| field | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    warning = results.get("train_split_warning")
    if warning:
        lines.append(f"\n{warning}")
    return "\n".join(lines)


def _compiled(results: dict) -> str:
    """"yes (S s)" with the compile time apart from run time (and the mode when it replays CUDA graphs, the
    activation memory budget when it is not torch's 1.0, and the recompute switches that are on), or "no"."""
    if not results.get("compiled"):
        return "no"
    budget, mode = results.get("compile_memory_budget"), results.get("compile_mode")
    extra = f", {mode}: CUDA graphs" if mode in ("reduce-overhead", "max-autotune") else ""
    extra += f", activation memory budget {budget:g}" if budget is not None and budget != 1.0 else ""
    if results.get("compile_recompute"):
        extra += f", recomputes {' and '.join(results['compile_recompute'])} (MUSE_RECOMPUTE_*_IN_COMPILE)"
    return f"yes ({_fmt(results.get('compile_s'), '.1f')} s{extra})"


def _fmt(value, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)
