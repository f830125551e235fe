"""Detection fine-tuning under torchrun with 2 CPU processes (Gloo): each trains on its share of the batches, the first
logs, validates and saves once; the checkpoint evaluates like any other."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from test_votenet import tiny_det_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_detection_run(tmp_path):
    data = tiny_det_dataset(tmp_path / "data", 2, 1)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", "-m", "ppkt.cli",
           "finetune", "--task", "detection", "--config", str(ROOT / "configs" / "detection_synthetic.yaml"),
           f"data.root={data}", f"data.classes={data}", "model.channels=[8,16,16,16,16,16,16,16]", "model.num_seeds=64",
           "model.num_proposals=16", "model.nsample=4", "train.iterations=3", "train.batch_size=2", "train.workers=0",
           "train.threads=1", "train.log_every=1", "train.eval_every=2", "train.device=cpu", f"train.out_dir={out}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # a hang fails here
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("mAP@0.25 ") == 1  # the final table, printed by the first process only
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3] and any("val_map25" in r for r in rows)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == 3 and (out / "eval" / "metrics.json").is_file()
