"""Process-group set-up for ``torchrun`` (several GPUs or machines); a plain ``python -m`` run is one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bottomup.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group ``torchrun`` describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), if any.

    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``. Distributed runs use NCCL on CUDA and gloo on CPU.
    """
    if device not in DEVICES:
        # Anything else (say "gpu") would otherwise silently mean the CPU.
        raise ConfigError(f"device={device!r} is not a device choice; choose one of {list(DEVICES)}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda was asked for but no CUDA device is available; use device=cpu or auto")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(rank, world_size, local_rank, dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def sync_buffers(ctx: Context, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP copies rank 0's buffers to the others before each forward pass, but each rank then updates them from its own
    batch, so after the last step they differ; syncing at the end of an epoch makes every rank hold the model that
    rank 0 evaluates and checkpoints.
    """
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(ctx: Context, obj):
    """``obj`` of rank 0 on every rank."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
