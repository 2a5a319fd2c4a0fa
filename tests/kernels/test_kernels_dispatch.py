"""The one switch of muse.kernels: Triton importable, and CUDA tensors or TRITON_INTERPRET=1; MUSE_KERNELS=0 off."""

from __future__ import annotations

import os

import torch

from muse import kernels
from verification.plugin import interpret_without_gpu


def test_muse_kernels_0_turns_every_kernel_off(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("MUSE_KERNELS", "0")
    assert not kernels.enabled(torch.zeros(1))
    monkeypatch.setenv("MUSE_KERNELS", "1")
    assert kernels.enabled(torch.zeros(1))


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setenv("MUSE_KERNELS", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not kernels.enabled(torch.zeros(1))
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not kernels.enabled(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.enabled(torch.zeros(1), torch.zeros(2))


def test_without_triton_nothing_is_enabled(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", False)
    monkeypatch.setenv("MUSE_KERNELS", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not kernels.enabled(torch.zeros(1))


def test_kernels_cover_float16_planes_only(monkeypatch):
    monkeypatch.setattr(kernels, "HAS_TRITON", True)
    monkeypatch.setenv("MUSE_KERNELS", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    half = torch.zeros(2, 3, dtype=torch.float16)
    assert kernels.use_kernel(half, None, torch.zeros(3))
    assert not kernels.use_kernel(half.float())
    assert not kernels.use_kernel(half.double())


def test_environment_restores_values(monkeypatch):
    monkeypatch.setenv("MUSE_KERNELS", "1")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with kernels.environment(MUSE_KERNELS="0", TRITON_INTERPRET="1"):
        assert os.environ["MUSE_KERNELS"] == "0" and os.environ["TRITON_INTERPRET"] == "1"
    assert os.environ["MUSE_KERNELS"] == "1" and "TRITON_INTERPRET" not in os.environ


def test_test_sessions_without_a_gpu_load_the_interpreter_with_kernels_off():
    env: dict[str, str] = {}
    assert interpret_without_gpu(env, gpu_count=0)
    assert env == {"TRITON_INTERPRET": "1", "MUSE_KERNELS": "0"}
    env = {"CUDA_VISIBLE_DEVICES": "0"}
    assert not interpret_without_gpu(env, gpu_count=1)
    assert "TRITON_INTERPRET" not in env
    env = {"TRITON_INTERPRET": "0"}
    assert not interpret_without_gpu(env, gpu_count=0)
    assert env == {"TRITON_INTERPRET": "0"}
