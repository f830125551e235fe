"""torchrun with 2 CPU processes (Gloo): DistributedDataParallel pretraining ends with the same weights in both
processes, and a process whose share of the batch is an unusable frame does not hang the other."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, load_checkpoint
from ppkt.train.logging import read_metrics

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"


def test_two_processes_agree_and_an_unusable_frame_does_not_hang(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(FRAMES / "camera-intrinsics.txt", frames)
    for n in ("000000", "000050", "000100", "000150"):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(FRAMES / f"frame-{n}.{kind}", frames)
    Image.fromarray(np.zeros((480, 640), dtype=np.uint16)).save(frames / "frame-000100.depth.png")  # all zero depth
    run = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
        str(ROOT / "tests" / "train" / "ddp_pretrain.py"), str(tmp_path / "rank"), str(ROOT / "configs" / "pretrain_demo.yaml"),
        f"data.roots=[{frames}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "student.channels=[8,16,16,16,16,16,16,16]",
        "loss.n_sub=128", "train.iterations=4", "train.batch_size=2", "train.workers=0", "train.threads=1",
        "train.log_every=1", f"train.out_dir={run}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)  # a hang fails here
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    # 4 iterations x 2 frames = 2 epochs: the empty frame came up twice, in either process; it counts once
    assert records[-1]["skipped_frames"] == 1
    assert load_checkpoint(run / "backbone.pth", BACKBONE_FORMAT)["pretrain"]["iteration"] == 4
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt", PRETRAIN_FORMAT)["model"]
    assert len(ranks[0]["parameters"]) > 50
    for key, value in ranks[0]["parameters"].items():
        assert torch.equal(value, ranks[1]["parameters"][key]), key  # the processes stayed in step
    # BatchNorm running statistics are per process (DDP broadcasts process 0's before each forward); the checkpoint
    # is process 0's state
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, checkpoint[key]), key
