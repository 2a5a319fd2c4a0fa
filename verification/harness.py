"""numpy <-> muse glue for the tests: build inputs on a device, bring results back as numpy."""

from __future__ import annotations

import numpy as np
import torch

import muse.complex as C


def ct(planes: np.ndarray, device: str) -> C.ComplexTensor:
    """A ComplexTensor on ``device`` from planes (2, *shape) (dtype kept)."""
    return C.ComplexTensor(torch.from_numpy(np.array(planes, order="C")).to(device))


def tensor(values: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.array(values, order="C")).to(device)


def planes(z: C.ComplexTensor) -> np.ndarray:
    """Planes of a ComplexTensor as a numpy array on the host (dtype kept)."""
    return z.planes.detach().cpu().numpy()


def host(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


__all__ = ["ct", "host", "planes", "tensor"]
