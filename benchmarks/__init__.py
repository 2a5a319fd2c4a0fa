"""Benchmark runners: they measure (memory, speed, the Stage 1 criteria) and report what they measured."""
