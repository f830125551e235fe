"""One process per device: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them, a single process."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ppkt.config import ConfigError
from ppkt.device import flush_denormals, pick_device


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


def mixed_precision(amp: bool, dtype: str, device: torch.device) -> Tuple[torch.autocast, torch.amp.GradScaler]:
    """The autocast context and GradScaler of train.amp / train.amp_dtype ("float16" | "bfloat16"); both are off
    unless `amp` and `device` is CUDA (mixed precision is not used on the CPU).

    The GradScaler is on for bfloat16 too: spconv 2.3.8 casts the inputs of its convolutions to float16 under any CUDA
    autocast (`custom_fwd(cast_inputs=torch.float16)`), so the student computes and back-propagates in float16 either
    way, and its gradients need the loss scaling; bfloat16 changes the dtype of the teacher's convolutions.
    ConfigError when bfloat16 is asked on a GPU without native bfloat16.
    """
    on = amp and device.type == "cuda"
    if on and dtype == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(f"train.amp_dtype: {torch.cuda.get_device_name(device)} has no native bfloat16; "
                          "use train.amp_dtype=float16")
    return torch.autocast("cuda", dtype=getattr(torch, dtype), enabled=on), torch.amp.GradScaler("cuda", enabled=on)


def sync_batchnorm(module: nn.Module, enabled: bool, d: Dist) -> nn.Module:
    """`module` with its BatchNorm layers made SyncBatchNorm (statistics over every process's part of the batch) when
    `enabled` and there are several processes; else `module` itself. CUDA only: torch's SyncBatchNorm refuses CPU
    tensors (ppkt.config refuses train.sync_bn on the CPU)."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(module) if enabled and d.world_size > 1 else module


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def training_process(device: str, threads: int) -> Iterator[Tuple[Dist, torch.device]]:
    """Join torchrun's group (if any), pick the device, set CPU threads; leave the group at exit."""
    d = init_distributed("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        dev = pick_device(device, d.local_rank, "train.device")
        if threads > 0:
            torch.set_num_threads(threads)
        with flush_denormals(dev):
            yield d, dev
    finally:
        cleanup()
