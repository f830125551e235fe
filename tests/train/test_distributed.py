"""torchrun with 2 CPU processes (Gloo): the DistributedDataParallel path of `ppkt pretrain` runs and exports."""
import os
import subprocess
import sys
from pathlib import Path

from ppkt.checkpoint import BACKBONE_FORMAT, load_checkpoint
from ppkt.train.logging import read_metrics

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"


def test_two_process_pretraining_runs(tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", "-m", "ppkt.cli",
        "pretrain", "--config", str(ROOT / "configs" / "pretrain_demo.yaml"),
        f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "student.channels=[8,16,16,16,16,16,16,16]",
        "loss.n_sub=128", "train.iterations=2", "train.batch_size=2", "train.workers=0", "train.threads=1",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["iteration"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    assert load_checkpoint(tmp_path / "run" / "backbone.pth", BACKBONE_FORMAT)["pretrain"]["iteration"] == 2
