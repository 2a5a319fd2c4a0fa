"""MUSE numerics verification: exact mpmath references, ULP bounds and property tests.

Modules: :mod:`~verification.strategies` (Hypothesis data), :mod:`~verification.reference`
(exact results rounded once), :mod:`~verification.ulp` (ULP arithmetic),
:mod:`~verification.bounds` (the bounds of docs/numerics.md), :mod:`~verification.checks`
(the one assertion path), :mod:`~verification.harness` (numpy <-> device glue),
:mod:`~verification.record` and :mod:`~verification.report` (the ``muse verify`` report),
:mod:`~verification.plugin` (pytest plugin: profiles, GPU pinning, records).
Run ``pytest verification`` or ``muse verify``.
"""
