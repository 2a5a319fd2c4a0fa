"""Recurrences as pure functions: a sequential reference beside each parallel/chunked form.

``bk``: the causal BK-Core resolvent scan; ``hebbian``: decayed causal linear attention;
``complex_diag``: the complex diagonal linear recurrence of Stage 1's token mixer; ``selective_diag``: the same
recurrence with a real decay (and optionally a phase) per token (its ``decay="input"`` option); ``retention``: decayed
complex linear attention with turning keys (Stage 1's content-addressed mixer).
Imports ``muse._checks``, the kernel switch of ``muse.kernels`` and torch; the mixer modules in :mod:`muse.nn.mixers` call these.
"""

from muse.scan.bk import (
    bk_diagonal,
    bk_green_adjoint,
    bk_green_scan,
    bk_green_sequential,
    moebius_prefix_products,
)
from muse.scan.complex_diag import (
    complex_diag_scan,
    complex_diag_scan_sequential,
    complex_diag_step,
)
from muse.scan.hebbian import (
    hebbian_parallel,
    hebbian_parallel_with_state,
    hebbian_sequential,
    segment_sum,
)
from muse.scan.retention import complex_retention, complex_retention_sequential
from muse.scan.selective_diag import (
    selective_diag_scan,
    selective_diag_scan_sequential,
    selective_diag_step,
)

__all__ = [
    "bk_diagonal", "bk_green_adjoint", "bk_green_scan", "bk_green_sequential", "complex_diag_scan", "complex_diag_scan_sequential",
    "complex_diag_step", "complex_retention", "complex_retention_sequential", "hebbian_parallel", "hebbian_parallel_with_state", "hebbian_sequential",
    "moebius_prefix_products", "segment_sum", "selective_diag_scan", "selective_diag_scan_sequential", "selective_diag_step",
]
