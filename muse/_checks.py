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
    """A finite real number within the given bounds.  While torch.compile traces, the value is
    returned unchecked: dynamo turns a float module attribute it has seen change into a symbolic
    float that the checks cannot evaluate (the module checked it when it was set)."""
    if torch.compiler.is_compiling():
        return value
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


def check_shift(name: str, value: object) -> complex:
    """A spectral shift z with Im z > 0: a complex number or a (re, im) pair (the form configs write)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} as a sequence must be (re, im), got {len(value)} items")
        value = complex(check_float(f"{name}[0]", value[0]), check_float(f"{name}[1]", value[1]))
    if isinstance(value, bool) or not isinstance(value, numbers.Complex):
        raise TypeError(f"{name} must be a complex number or a (re, im) pair, got {_type_name(value)}")
    value = complex(value)
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        raise ValueError(f"{name} must be finite, got {value}")
    if value.imag <= 0.0:
        raise ValueError(f"{name} must have Im {name} > 0 (it bounds |G| <= 1 / Im {name}), got {value}")
    return value


def check_float_dtype(name: str, dtype: object) -> torch.dtype:
    """float16, float32 or float64 (the dtypes of real tensors and of complex planes)."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, float32 or float64, got {dtype}")
    return dtype


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of the strings in ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {_type_name(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


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


def check_real_tensor(name: str, value: object) -> torch.Tensor:
    """A real floating tensor; a native complex tensor is refused with the way to convert it."""
    check_tensor(name, value)
    if value.is_complex():
        raise TypeError(
            f"{name} is a native complex tensor ({value.dtype}); "
            "convert it with muse.complex.from_complex() first"
        )
    return check_float_tensor(name, value)


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
    """Token ids of shape (batch, seq) with 0 <= id < vocab_size, returned as int64.

    Every integer dtype is accepted (uint16 is the project's token storage, see
    ``muse.data``) and converted once to int64, the dtype torch's indexing wants; bool,
    floating and complex tensors are refused. Dtype and shape checks need no host sync;
    the value-range check is :func:`check_token_range`.
    """
    check_tensor(name, ids)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (any of int8..int64, uint8..uint64), got {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, seq), got shape {tuple(ids.shape)}")
    if max_seq_len is not None and ids.shape[1] > max_seq_len:
        raise ValueError(
            f"{name} has sequence length {ids.shape[1]}, longer than max_seq_len={max_seq_len}"
        )
    ids = ids.long()  # no copy when already int64
    return check_token_range(name, ids, vocab_size)


def host_sync_forbidden(t: torch.Tensor) -> bool:
    """True where a value check must not read values back to the host: inside ``torch.compile``
    (a sync would break the graph) or while the current CUDA stream captures a CUDA graph (a sync
    is an error there, and a failed capture leaves the CUDA RNG unusable)."""
    if torch.compiler.is_compiling():
        return True
    return t.device.type == "cuda" and torch.cuda.is_current_stream_capturing()


@torch.library.custom_op("muse::assert_in_range", mutates_args=())
def _assert_in_range(t: torch.Tensor, lo: int, hi: int, message: str) -> torch.Tensor:
    torch._assert_async(((t >= lo) & (t < hi)).all(), message)
    return t.clone()


@_assert_in_range.register_fake
def _assert_in_range_fake(t: torch.Tensor, lo: int, hi: int, message: str) -> torch.Tensor:
    return torch.empty_like(t)


def assert_in_range(t: torch.Tensor, lo: int, hi: int, message: str) -> torch.Tensor:
    """A device-side assert that every value of the integer tensor ``t`` lies in [lo, hi); returns
    ``t`` (a copy) for the caller to use in its place. No host sync: the error (RuntimeError with
    ``message``) surfaces at the next synchronisation.

    An opaque op that returns a tensor rather than a bare ``torch._assert_async``: under a
    partitioner memory budget below 1, torch 2.11's min-cut partitioner sizes every forward node
    and fails on the assert node, which has no value metadata (measured on CUDA, 2026-12-07)."""
    return _assert_in_range(t, lo, hi, message)


def check_token_range(name: str, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """ValueError unless every id of the int64 tensor ``ids`` lies in [0, vocab_size); returns the
    ids to use from here on.

    The one check that reads values. Eager: a host sync, and the error names the offending id.
    Inside ``torch.compile`` or a CUDA graph capture (:func:`host_sync_forbidden`) it is a
    device-side assert (:func:`assert_in_range`), so there is no host sync and no graph break.
    """
    if not ids.numel() or ids.device.type == "meta":
        return ids
    if host_sync_forbidden(ids):
        return assert_in_range(ids, 0, vocab_size, f"{name} contains a token id outside [0, {vocab_size})")
    lo, hi = torch.aminmax(ids.long())
    lo, hi = int(lo), int(hi)
    if lo < 0:
        raise ValueError(f"{name} contains a negative token id ({lo}); ids must be in [0, {vocab_size})")
    if hi >= vocab_size:
        raise ValueError(f"{name} contains token id {hi}, out of range for vocab_size={vocab_size}")
    return ids
