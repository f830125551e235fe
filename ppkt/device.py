"""Which device a run uses: the value of a `device` setting checked against this machine, and the CPU's denormal
flush for sparse convolution. Task-neutral: configs, training, evaluation and prediction read it."""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from ppkt.errors import ConfigError


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
