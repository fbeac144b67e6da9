"""Process-group setup for DDP under ``torchrun`` (NCCL on GPU, gloo on CPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "cleanup_distributed", "resolve_device"]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that logs and writes files)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one rank takes part."""
        return self.world_size > 1

    @classmethod
    def current(cls) -> DistEnv:
        """The env of an initialised process group, else a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return cls()


def resolve_device(device: str, env: DistEnv | None = None) -> torch.device:
    """``auto`` -> this rank's CUDA device when one is available, else CPU; ``cuda`` without a
    GPU raises a clear error."""
    env = env or DistEnv.current()
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is visible (use device: auto or cpu)")
    return torch.device("cuda", env.local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group described by torchrun's variables (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a plain process stays single.

    The backend is NCCL when the run uses CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv.current()


def cleanup_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
