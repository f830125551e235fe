"""One process per device: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them, a single process."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group (NCCL on CUDA, Gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(requested: str, d: Dist) -> torch.device:
    """'auto' -> this process's GPU when CUDA works, else the CPU."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is usable here; use train.device=cpu or auto")
    torch.cuda.set_device(d.local_rank)
    return torch.device("cuda", d.local_rank)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def training_process(device: str, threads: int) -> Iterator[Tuple[Dist, torch.device]]:
    """Join torchrun's group (if any), pick the device, set CPU threads; leave the group at exit."""
    d = init_distributed("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        dev = pick_device(device, d)
        if threads > 0:
            torch.set_num_threads(threads)
        if dev.type == "cpu":
            torch.set_flush_denormal(True)  # measured: denormal floats made some CPU sparse-conv steps 10-100x slower
        yield d, dev
    finally:
        cleanup()
