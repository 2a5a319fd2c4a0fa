"""Argument validation shared by every layer: one message format, TypeError/ValueError only."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch

FLOAT_DTYPES = (torch.float16, torch.float32, torch.float64)


def _type_name(value: object) -> str:
    return type(value).__name__


def check_type(name: str, value: object, types: type | tuple[type, ...], what: str) -> None:
    """Raise TypeError unless ``value`` is an instance of ``types``; ``what`` describes them."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise TypeError(f"{name} must be {what}, got {_type_name(value)}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_int(name: str, value: object, *, min_value: int | None = None) -> int:
    """An integer (not bool) at least ``min_value``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_type_name(value)}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    return value


def check_float(
    name: str,
    value: object,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """A finite real number within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_type_name(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if min_value is not None and (value < min_value or (value == min_value and not min_inclusive)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {min_value}, got {value}")
    if max_value is not None and (value > max_value or (value == max_value and not max_inclusive)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {max_value}, got {value}")
    return value


def check_probability(name: str, value: object) -> float:
    """A dropout-style probability in [0, 1)."""
    return check_float(name, value, min_value=0.0, max_value=1.0, max_inclusive=False)


def check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_type_name(value)}")
    return value


def check_float_tensor(name: str, value: object) -> torch.Tensor:
    """A real floating tensor (float16, float32 or float64)."""
    check_tensor(name, value)
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float16, float32 or float64, got {value.dtype}")
    return value


def check_same_device(named: Iterable[tuple[str, torch.device]]) -> torch.device:
    """All devices equal; the error names each argument and its device."""
    pairs = list(named)
    first_name, first = pairs[0]
    for other_name, other in pairs[1:]:
        if other != first:
            raise ValueError(
                f"{first_name} is on {first} but {other_name} is on {other}; "
                "move them to the same device"
            )
    return first


def check_token_ids(name: str, ids: object, vocab_size: int, max_seq_len: int | None = None) -> torch.Tensor:
    """Token ids: an integer tensor of shape (batch, seq) with 0 <= id < vocab_size.

    Eager: a ValueError names the offending id.  Inside ``torch.compile`` the range check is a
    device-side assert (``torch._assert_async``), so the graph has no host sync and no break.
    """
    check_tensor(name, ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (e.g. torch.long), got {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, seq), got shape {tuple(ids.shape)}")
    if max_seq_len is not None and ids.shape[1] > max_seq_len:
        raise ValueError(
            f"{name} has sequence length {ids.shape[1]}, longer than max_seq_len={max_seq_len}"
        )
    if ids.numel() and torch.compiler.is_compiling():
        # No host sync inside a compiled graph: an out-of-range id fails a device-side assert.
        torch._assert_async(((ids >= 0) & (ids < vocab_size)).all(),
                            f"{name} contains a token id outside [0, {vocab_size})")
    elif ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0:
            raise ValueError(f"{name} contains a negative token id ({lo}); ids must be in [0, {vocab_size})")
        if hi >= vocab_size:
            raise ValueError(f"{name} contains token id {hi}, out of range for vocab_size={vocab_size}")
    return ids
