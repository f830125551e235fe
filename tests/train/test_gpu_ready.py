"""What of the GPU options can be checked on the CPU: benchmarks/gpu_check.py says that it checked nothing, the
config refuses SyncBatchNorm on the CPU and unknown amp dtypes, mixed precision is off on the CPU, SyncBatchNorm
conversion, and the DataLoader's pinning thread pins every tensor of a PairBatch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data._utils.pin_memory import pin_memory

from ppkt.config import ConfigError, load_config, validate_pretrain
from ppkt.data.pairs import PairBatch
from ppkt.train.distributed import Dist, mixed_precision, sync_batchnorm

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "pretrain_demo.yaml"


def test_gpu_check_without_cuda_says_so_and_checks_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, also on a GPU machine
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert result.returncode == 77, result.stderr
    assert "no usable CUDA device" in result.stderr and "nothing was checked" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["checks"] == [] and report["ok"] is None and "no usable CUDA device" in report["skipped"]


def test_config_refuses_sync_bn_on_the_cpu_and_unknown_amp_dtypes():
    validate_pretrain(load_config(DEMO, ["train.device=cpu", "train.amp=true", "train.amp_dtype=bfloat16",
                                         "loss.gather_negatives=true"]))
    with pytest.raises(ConfigError) as err:
        validate_pretrain(load_config(DEMO, ["train.device=cpu", "train.sync_bn=true", "train.amp_dtype=float32"]))
    lines = str(err.value).splitlines()
    assert any(line.startswith("train.sync_bn: SyncBatchNorm needs CUDA") for line in lines), lines
    assert any(line.startswith("train.amp_dtype: must be one of float16, bfloat16") for line in lines), lines
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.sync_bn"):
            validate_pretrain(load_config(DEMO, ["train.device=auto", "train.sync_bn=true"]))


def test_mixed_precision_is_off_on_the_cpu():
    for dtype in ("float16", "bfloat16"):
        amp, scaler = mixed_precision(True, dtype, torch.device("cpu"))
        with amp:
            assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")
        assert not scaler.is_enabled() and scaler.state_dict() == {}


def test_sync_bn_converts_the_batchnorm_of_several_processes_only():
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert sync_batchnorm(module, True, Dist()) is module  # one process: nothing to synchronise
    assert sync_batchnorm(module, False, Dist(0, 2)) is module
    synced = sync_batchnorm(module, True, Dist(0, 2))
    assert isinstance(synced[1], nn.SyncBatchNorm) and synced[1].weight is module[1].weight
    assert synced.state_dict().keys() == module.state_dict().keys()  # checkpoints and exports keep their keys


def test_the_dataloader_pinning_thread_pins_every_tensor_of_a_pair_batch(monkeypatch):
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t.clone())  # no CUDA here
    batch = PairBatch(torch.rand(2, 3, 4, 5), torch.zeros(6, 4, dtype=torch.int32), torch.rand(6, 3),
                      torch.arange(6), torch.tensor([0, 0, 0, 1, 1, 1]), [("frame", "reason")], torch.rand(2, 8, 1, 2))
    out = pin_memory(batch)  # what DataLoader(pin_memory=True) does to each batch
    assert isinstance(out, PairBatch) and out.skipped == batch.skipped
    assert len(pinned) == 6 and all(torch.equal(getattr(out, k), getattr(batch, k)) for k in
                                    ("images", "coords", "feats", "pixel", "voxel_batch", "teacher_features"))
    moved = out.to(torch.device("cpu"))
    assert moved.teacher_features is out.teacher_features  # same device: no copy
