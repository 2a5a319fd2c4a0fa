"""The Stage 1 completion criteria as data, and the one rule that combines them.

A criterion is ``pass``, ``fail`` or ``not_measured``. ``all_pass`` is true only when
every criterion was measured and passed — a missing Phase 2 run or an untrained model
makes it false (see "Departures from the seed code" in docs/architecture.md). Memory is
measured on every device: live tensor bytes, plus ``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not_measured"

PPL_MAX_RATIO = 1.03  # Stage 1 test PPL <= Phase 2 test PPL + 3 %
VRAM_MAX_RATIO = 0.52  # Stage 1 peak VRAM <= 52 % of Phase 2's
NAN_MAX_RATE = 0.0  # over the random-input trials
GRAD_RANGE = (1e-6, 1e3)


@dataclass
class Criterion:
    name: str
    status: str
    value: str
    threshold: str
    note: str = ""


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def trained(name: str, run: dict | None, unigram_ppl: float | None) -> Criterion:
    """A model counts as trained when it saw tokens and beats the unigram baseline on the eval split;
    a run that raised or whose eval PPL is not finite fails, with the reason."""
    threshold = "trained on > 0 tokens and eval PPL < unigram PPL of the training text"
    if run and run.get("error"):
        return Criterion(f"{name} trained", FAIL, f"the run failed: {run['error']}", threshold)
    if run and run.get("eval_ppl") is not None and not _finite(run["eval_ppl"]):
        return Criterion(f"{name} trained", FAIL, f"eval PPL is {run['eval_ppl']} (non-finite)", threshold)
    if not run or not _finite(run.get("eval_ppl")) or unigram_ppl is None:
        return Criterion(f"{name} trained", NOT_MEASURED, "no evaluated run", threshold)
    tokens = run.get("tokens_trained", 0) or 0
    ok = tokens > 0 and run["eval_ppl"] < unigram_ppl
    return Criterion(f"{name} trained", PASS if ok else FAIL,
                     f"{tokens:,} tokens, PPL {run['eval_ppl']:.2f} vs unigram {unigram_ppl:.2f}", threshold)


def perplexity(stage1_ppl: float | None, phase2_ppl: float | None) -> Criterion:
    threshold = f"Stage 1 PPL <= {PPL_MAX_RATIO:.2f} x Phase 2 PPL"
    if not _finite(stage1_ppl, phase2_ppl):
        return Criterion("perplexity vs Phase 2", NOT_MEASURED,
                         f"stage1={stage1_ppl}, phase2={phase2_ppl}", threshold)
    ratio = stage1_ppl / phase2_ppl
    return Criterion("perplexity vs Phase 2", PASS if ratio <= PPL_MAX_RATIO else FAIL,
                     f"{stage1_ppl:.2f} / {phase2_ppl:.2f} = {ratio:.3f}", threshold)


def perplexity_fair(stage1: dict | None, phase2: dict | None, phase2_nomix: dict | None,
                    train_split: str | None, eval_split: str | None, eval_targets: int | None) -> Criterion:
    """:func:`perplexity`, counted only when the comparison means something.

    ``not_measured`` unless Phase 2 beats its own mixer-free variant trained the same way in the
    same run (a baseline whose mixers hurt proves nothing), the training text is not the eval
    split, and both models scored every one of the ``eval_targets`` eval tokens; ``fail`` when a
    model's run failed or its PPL is not finite."""
    threshold = (f"Stage 1 PPL <= {PPL_MAX_RATIO:.2f} x Phase 2 PPL; Phase 2 beats its mixer-free variant; "
                 "train split != eval split; every eval token scored by both")
    name = "perplexity vs Phase 2"
    for label, run in (("Stage 1", stage1), ("Phase 2", phase2)):
        if run and run.get("error"):
            return Criterion(name, FAIL, f"{label} run failed: {run['error']}", threshold)
        if run and run.get("eval_ppl") is not None and not _finite(run["eval_ppl"]):
            return Criterion(name, FAIL, f"{label} PPL is {run['eval_ppl']} (non-finite)", threshold)
    if not stage1 or not phase2 or not _finite(stage1.get("eval_ppl"), phase2.get("eval_ppl")):
        return Criterion(name, NOT_MEASURED, "a model has no evaluated run", threshold)
    if not train_split or train_split == eval_split:
        return Criterion(name, NOT_MEASURED, f"trained on the eval split ({eval_split!r})", threshold)
    scored = (stage1.get("eval_tokens_scored"), phase2.get("eval_tokens_scored"))
    if eval_targets is None or scored != (eval_targets, eval_targets):
        return Criterion(name, NOT_MEASURED,
                         f"eval tokens scored: Stage 1 {scored[0]}, Phase 2 {scored[1]}, expected {eval_targets}",
                         threshold)
    base = perplexity(stage1["eval_ppl"], phase2["eval_ppl"])
    nomix = (phase2_nomix or {}).get("eval_ppl")
    if not _finite(nomix):
        why = f"failed: {phase2_nomix['error']}" if (phase2_nomix or {}).get("error") else "no evaluated run"
        return Criterion(name, NOT_MEASURED, f"{base.value}; Phase 2 without mixers {why}", threshold)
    if not phase2["eval_ppl"] < nomix:
        return Criterion(name, NOT_MEASURED,
                         f"{base.value}; but Phase 2 ({phase2['eval_ppl']:.2f}) does not beat its mixer-free "
                         f"variant ({nomix:.2f}): the baseline's mixers hurt, so the ratio proves nothing", threshold)
    return Criterion(name, base.status, f"{base.value}; Phase 2 beats its mixer-free variant ({nomix:.2f}); "
                     f"{eval_targets:,} tokens scored by each", threshold)


def vram(stage1_peak: int | None, phase2_peak: int | None, measure: str | None, note: str = "") -> Criterion:
    """Peak memory of forward + loss + backward; ``measure`` names how it was measured
    (``torch.cuda.max_memory_allocated`` on CUDA, live tensor bytes elsewhere)."""
    threshold = f"Stage 1 peak <= {VRAM_MAX_RATIO:.2f} x Phase 2 peak (forward+loss+backward)"
    if not _finite(stage1_peak, phase2_peak) or not phase2_peak or not measure:
        return Criterion("VRAM vs Phase 2", NOT_MEASURED, "peak memory not measured", threshold, note)
    ratio = stage1_peak / phase2_peak
    return Criterion("VRAM vs Phase 2", PASS if ratio <= VRAM_MAX_RATIO else FAIL,
                     f"{stage1_peak / 2**20:.1f} MiB / {phase2_peak / 2**20:.1f} MiB = {ratio:.3f} ({measure})",
                     threshold, note)


def nan_rate(trials: dict | None) -> Criterion:
    threshold = "non-finite rate == 0 over the random-input trials"
    if not trials:
        return Criterion("NaN/Inf rate", NOT_MEASURED, "no trials", threshold)
    rate = trials["nonfinite_rate"]
    return Criterion("NaN/Inf rate", PASS if rate <= NAN_MAX_RATE else FAIL,
                     f"{trials['nonfinite_trials']}/{trials['trials']} = {rate:.1%}", threshold)


def gradient_norms(trials: dict | None) -> Criterion:
    lo, hi = GRAD_RANGE
    threshold = f"every parameter's gradient norm in [{lo:g}, {hi:g}] in every trial"
    if not trials:
        return Criterion("gradient norms", NOT_MEASURED, "no trials", threshold)
    offenders = trials["grad_offenders"]
    value = (f"min {trials['grad_norm_min']:.3e}, max {trials['grad_norm_max']:.3e}, "
             f"{len(offenders)} parameter(s) outside")
    if offenders:  # name the first few and their first offending trial: an exact 0 reads differently from a blow-up
        if isinstance(offenders, dict):  # name -> [(trial, norm), ...] (benchmarks.measure.stability_trials)
            named = [f"{name} ({_norm_text(cases[0][1])} in trial {cases[0][0]})"
                     for name, cases in list(offenders.items())[:3]]
        else:
            named = [str(name) for name in list(offenders)[:3]]
        value += ": " + ", ".join(named) + (", ..." if len(offenders) > 3 else "")
    return Criterion("gradient norms", FAIL if offenders else PASS, value, threshold)


def _norm_text(value) -> str:
    """A gradient norm for the report: 3 significant digits, or "non-finite" (None once through JSON)."""
    if value is None or not math.isfinite(value):
        return "non-finite"
    return f"{value:.3g}"


def planar(layout: dict | None) -> Criterion:
    threshold = ("every complex activation of a forward pass is planar ([RRR...III...]) and no tensor "
                 "saved for backward is a native (interleaved) complex tensor")
    if not layout or layout["complex_activations"] == 0:
        return Criterion("planar layout", NOT_MEASURED, "no complex activations seen", threshold)
    interleaved = layout.get("saved_interleaved", [])
    ok = not layout["non_planar"] and not interleaved
    value = (f"{layout['complex_activations'] - len(layout['non_planar'])}/"
             f"{layout['complex_activations']} planar")
    if "saved_tensors" in layout:
        value += f"; {len(interleaved)} of {layout['saved_tensors']} saved-for-backward tensors interleaved"
    return Criterion("planar layout", PASS if ok else FAIL, value, threshold)


def summarize(criteria: list[Criterion]) -> dict:
    return {
        "criteria": [asdict(c) for c in criteria],
        "all_pass": bool(criteria) and all(c.status == PASS for c in criteria),
        "not_measured": [c.name for c in criteria if c.status == NOT_MEASURED],
        "failed": [c.name for c in criteria if c.status == FAIL],
    }
