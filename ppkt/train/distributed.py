"""One process per device: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them, a single process."""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from ppkt.config import ConfigError


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


_DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_problem(requested: str, local_rank: int = 0) -> Optional[str]:
    """None when `requested` names a device this process can use, else the problem (naming the value and what exists).

    Accepted: "auto" (cuda:<local_rank> when CUDA is usable, else the CPU), "cpu", "cuda" (cuda:<local_rank>),
    "cuda:N". Only the syntax is checked for "cpu" and (local rank 0) "auto"; torch is asked about CUDA otherwise.
    """
    if not isinstance(requested, str) or not _DEVICE_SYNTAX.fullmatch(requested):
        return f"{requested!r} is not a device; use auto, cpu, cuda or cuda:N"
    if requested == "cpu" or (requested == "auto" and local_rank == 0):
        return None
    usable = torch.cuda.is_available()
    if requested == "auto" and not usable:
        return None
    if not usable:
        return f"{requested} requested but no CUDA device is usable here; use cpu or auto"
    index = int(requested[5:]) if requested.startswith("cuda:") else local_rank
    count = torch.cuda.device_count()
    if index >= count:
        which = requested if requested.startswith("cuda:") else f"{requested} (cuda:{index} for local rank {local_rank})"
        exist = "cuda:0" if count == 1 else f"cuda:0..cuda:{count - 1}"
        return f"{which} requested but this machine has {count} CUDA device{'s' if count != 1 else ''} ({exist})"
    return None


def pick_device(requested: str, local_rank: int = 0, what: str = "device") -> torch.device:
    """The torch.device of "auto" | "cpu" | "cuda" | "cuda:N"; ConfigError "<what>: <problem>" when unusable.

    auto -> cuda:<local_rank> when CUDA is usable, else cpu; cuda -> cuda:<local_rank>; cuda:N -> cuda:N.
    A CUDA device is made the current one (torch.cuda.set_device). `what` names the setting in the error
    (e.g. "train.device", "--device").
    """
    problem = device_problem(requested, local_rank)
    if problem is not None:
        raise ConfigError(f"{what}: {problem}")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    dev = torch.device("cuda", int(requested[5:]) if requested.startswith("cuda:") else local_rank)
    torch.cuda.set_device(dev)
    return dev


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


@contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """On CPU, denormal floats flushed to zero inside the block (measured: denormals made some CPU sparse-conv steps
    10-100x slower), and the CPU's default back after it: left on, the flush mode makes scipy's cKDTree crash later
    in the same process (seen: a segmentation fault building a tree after a pretraining run)."""
    if device.type != "cpu":
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
