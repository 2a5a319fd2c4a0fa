"""Process-group setup for ``torchrun`` and the DDP wrapper (PyTorch's engine, not ours).

``torchrun`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; we read them,
pick NCCL on CUDA and gloo on CPU (``backend="gloo"`` on CUDA too: its ranks may share a GPU, which
NCCL refuses, so DDP on CUDA can be checked on a one-GPU machine), and never touch NCCL_NVLS_ENABLE or
TORCH_SYMM_MEM_DISABLE_MULTICAST (the GPU machine sets them; multicast stays off).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: rank, local rank, world size, device, and who owns the group."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we destroy it
    backend: str | None = None  # the process group's: "nccl" or "gloo"; None for one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(request: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if request == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch.cuda.is_available() is False")
    if request not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {request!r}")
    return torch.device(request)


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"WORLD_SIZE > 1 but ${name} is not set; launch with torchrun")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


BACKENDS = ("auto", "nccl", "gloo")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``auto`` -> NCCL on CUDA, gloo on CPU; NCCL on the CPU is an error."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"backend='nccl' needs CUDA tensors, this run's device is {device.type}; use gloo")
    return backend


def init_distributed(device_request: str = "auto", backend: str = "auto") -> DistContext:
    """Read torchrun's environment and initialise the process group when WORLD_SIZE > 1.

    Each local rank takes its own GPU. Under gloo, local ranks beyond the visible GPUs share them
    (rank r on GPU r mod count); NCCL needs one GPU a rank."""
    base = resolve_device(device_request)
    backend = resolve_backend(backend, base)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        device = torch.device("cuda", torch.cuda.current_device()) if base.type == "cuda" else base
        return DistContext(0, 0, 1, device, owns_group=False)
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if base.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count and backend == "nccl":
            raise ValueError(f"LOCAL_RANK={local_rank} but only {count} GPUs are visible (NCCL needs one GPU a "
                             "rank; --dist-backend gloo lets ranks share them)")
        device = torch.device("cuda", local_rank % count)
        torch.cuda.set_device(device)
    else:
        device = base
    owns = not dist.is_initialized()
    if owns:
        if backend == "nccl":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise ValueError("the process group disagrees with $WORLD_SIZE/$RANK")
    return DistContext(rank, local_rank, world_size, device, owns_group=owns, backend=dist.get_backend())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def shutdown(ctx: DistContext, synchronize: bool = True) -> None:
    """Tear the group down. After a clean run all ranks meet at a barrier first, so no rank
    leaves while rank 0 still writes results (gloo once aborted a rank that left early); after
    an error there is no barrier, since the other ranks may never reach it."""
    if ctx.owns_group and dist.is_initialized():
        if synchronize:
            barrier(ctx)
        dist.destroy_process_group()


def fp32_allreduce_hook(process_group, bucket):
    """DDP comm hook: average a bucket in fp32 and round once (for fp16 gradients).

    NCCL would otherwise sum fp16 gradients in fp16 along the ring, rounding at every hop.
    """
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    wide = buffer.to(torch.float32).div_(dist.get_world_size(group))
    future = dist.all_reduce(wide, group=group, async_op=True).get_future()

    def finish(fut):
        buffer.copy_(fut.value()[0])
        return buffer

    return future.then(finish)


def wrap_ddp(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel on this rank's device; fp16 models reduce gradients in fp32.

    ``broadcast_buffers=False``: the models' only buffers are per-rank statistics counters.
    """
    ddp = DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        broadcast_buffers=False,
    )
    if any(p.dtype == torch.float16 for p in model.parameters()):
        ddp.register_comm_hook(None, fp32_allreduce_hook)
    return ddp
