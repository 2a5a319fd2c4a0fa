"""Recurrence algorithms as pure functions: a sequential reference beside each parallel/chunked form."""

from muse.scan.complex_diag import (
    complex_diag_scan,
    complex_diag_scan_sequential,
    complex_diag_step,
)

__all__ = ["complex_diag_scan", "complex_diag_scan_sequential", "complex_diag_step"]
