"""Device choice (ppkt.train.distributed.pick_device / device_problem): syntax, CPU-only machines, and the CUDA
branch with a faked device count; on a machine with a GPU, the real thing."""
import re

import pytest
import torch

from ppkt.config import ConfigError
from ppkt.train import distributed
from ppkt.device import device_problem, pick_device

NO_CUDA = not torch.cuda.is_available()


def test_cpu_is_always_there():
    assert pick_device("cpu") == torch.device("cpu")
    assert device_problem("cpu") is None and device_problem("auto") is None


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "CUDA", "cuda:", "cuda:-1", "", " cpu"])
def test_bad_syntax_names_the_value(value):
    problem = device_problem(value)
    assert problem is not None and repr(value) in problem and "auto, cpu, cuda or cuda:N" in problem
    with pytest.raises(ConfigError, match="^--device: " + re.escape(repr(value))):
        pick_device(value, what="--device")


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA device is usable here")
def test_without_cuda_auto_is_the_cpu_and_cuda_is_an_error():
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device("auto", local_rank=1) == torch.device("cpu")
    for value in ("cuda", "cuda:0", "cuda:1"):
        assert device_problem(value) == f"{value} requested but no CUDA device is usable here; use cpu or auto"
        with pytest.raises(ConfigError, match=f"^train.device: {value} requested but no CUDA device is usable here"):
            pick_device(value, what="train.device")


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend to have cuda:0 and cuda:1; record the set_device calls."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: current.append(torch.device(dev)))
    return current


def test_cuda_index_choice_with_two_devices(two_gpus):
    assert pick_device("auto") == torch.device("cuda", 0)
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert pick_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert pick_device("cuda:1", local_rank=0) == torch.device("cuda", 1)  # an explicit index wins
    assert two_gpus == [torch.device("cuda", i) for i in (0, 1, 1, 1)]  # each one made current


def test_missing_cuda_index_says_what_exists(two_gpus):
    assert device_problem("cuda:3") == "cuda:3 requested but this machine has 2 CUDA devices (cuda:0..cuda:1)"
    assert device_problem("cuda:1") is None and device_problem("cuda:0") is None
    assert "cuda (cuda:2 for local rank 2) requested but this machine has 2 CUDA devices" in device_problem("cuda", 2)
    assert "auto (cuda:2 for local rank 2)" in device_problem("auto", 2)
    with pytest.raises(ConfigError, match=r"^--device: cuda:2 requested but this machine has 2 CUDA devices"):
        pick_device("cuda:2", what="--device")
    assert two_gpus == []  # nothing made current on failure


def test_one_device_is_named_alone(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_problem("cuda:1") == "cuda:1 requested but this machine has 1 CUDA device (cuda:0)"


def test_training_process_uses_the_same_picker():
    with distributed.training_process("cpu", threads=0) as (d, dev):
        assert dev == torch.device("cpu") and d.world_size == 1
    with pytest.raises(ConfigError, match="^train.device: 'gpu' is not a device"):
        with distributed.training_process("gpu", threads=0):
            pass


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
def test_real_cuda_device():
    count = torch.cuda.device_count()
    dev = pick_device("cuda")
    assert dev == torch.device("cuda", 0) and torch.cuda.current_device() == 0
    assert torch.ones(2, device=dev).sum().item() == 2.0
    assert pick_device("auto") == torch.device("cuda", 0)
    assert pick_device(f"cuda:{count - 1}") == torch.device("cuda", count - 1)
    with pytest.raises(ConfigError, match=f"cuda:{count} requested but this machine has {count} CUDA device"):
        pick_device(f"cuda:{count}")
