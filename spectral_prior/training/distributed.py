"""One process or a torchrun job: the process's rank, its device, the process group, and the losses that must be the
same whatever the number of processes."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from ..devices import resolve_device

@dataclass(frozen=True)
class Processes:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> "Processes":
        if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(name: str, processes: Processes) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", processes.local_rank)
    return device


@contextmanager
def process_group(processes: Processes, device: torch.device) -> Iterator[None]:
    """Initialise torch.distributed for a torchrun job (gloo on CPU, nccl on CUDA); nothing for one process."""
    if processes.world_size == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def global_noise(seed: int, step: int, batch: int, dim: int, processes: Processes, device: torch.device) -> Tensor:
    """This rank's rows of the step's diffusion noise; the global draw depends on (seed, step) alone."""
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 7]).generate_state(1)[0]))
    return torch.randn(batch, dim, generator=generator)[processes.rank :: processes.world_size].to(device)


def rmse_loss(output: Tensor, gt: Tensor, processes: Processes) -> tuple[Tensor, float]:
    """(loss to back-propagate, RMSE over the global batch).

    RMSE is not a mean over samples, so under DDP, whose gradients are averaged over ranks, each rank back-propagates
    its MSE divided by 2 x the global RMSE: the averaged gradient is then exactly the global RMSE's gradient.
    """
    mse = F.mse_loss(output.float(), gt.float())
    if processes.world_size == 1:
        rmse = mse.sqrt()
        return rmse, rmse.item()
    global_mse = mse.detach().clone()
    dist.all_reduce(global_mse)
    global_rmse = (global_mse / processes.world_size).sqrt()
    return mse / (2 * global_rmse), global_rmse.item()


def mean_over_ranks(value: Tensor, processes: Processes) -> float:
    if processes.world_size == 1:
        return value.item()
    value = value.detach().clone()
    dist.all_reduce(value)
    return value.item() / processes.world_size
