"""Tests of the verification helpers themselves (ULPs, rounding, checker, plugin, report)."""
