"""torchrun with 2 CPU processes (Gloo), one launch for all the checks (tests/train/ddp_pretrain.py):

- DistributedDataParallel pretraining ends with the same weights in both processes, and a process whose share of
  the batch is an unusable frame does not hang the other;
- a 2-process run stopped after 2 of 4 iterations and resumed ends with the checkpoint of the straight run;
- loss.gather_negatives: the loss against every process's pixels equals the formula over all pairs, and a 2-process
  run equals a 1-process run over the same global batch (loss and weights), when both take every voxel.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, load_checkpoint
from ppkt.train.logging import read_metrics

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
# the 2-process vs 1-process runs: more pairs than voxels (every voxel is a pair, whatever the sampling order)
EQUAL = ("loss.n_sub=100000", "train.iterations=2", "optim.lr=0.02")


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """Runs every check's training runs in one torchrun launch; returns (folder, loader of `<name>.rank<r>.pt`)."""
    tmp = tmp_path_factory.mktemp("ddp")
    frames = tmp / "frames"
    frames.mkdir()
    shutil.copy(FRAMES / "camera-intrinsics.txt", frames)
    for n in ("000000", "000050", "000100", "000150"):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(FRAMES / f"frame-{n}.{kind}", frames)
    Image.fromarray(np.zeros((480, 640), dtype=np.uint16)).save(frames / "frame-000100.depth.png")  # all zero depth
    base = [f"data.roots=[{frames}]", "data.image_size=[60,80]", "data.voxel_size=0.1",
            "teacher.arch=resnet18", "teacher.weights=none", "teacher.stage=layer1",  # builds in half the time
            "student.channels=[8,16,16,16,16,16,16,16]", "loss.n_sub=128", "train.iterations=4", "train.batch_size=2",
            "train.workers=0", "train.threads=1", "train.log_every=1"]
    config = str(ROOT / "configs" / "pretrain_demo.yaml")
    run = lambda name, *extra, out=None, **kw: {"name": name, "config": config, **kw,  # noqa: E731
                                                "overrides": base + list(extra) + [f"train.out_dir={tmp / (out or name)}"]}
    runs = [
        run("straight"),
        run("part", "train.iterations=2", out="resumed"),
        run("resumed", resume=True),
        run("gathered", *EQUAL, "loss.gather_negatives=true", no_bn=True),
        run("single", *EQUAL, no_bn=True, processes=1),  # last: process 0 alone
    ]
    (tmp / "runs.json").write_text(json.dumps(runs))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(ROOT / "tests" / "train" / "ddp_pretrain.py"), str(tmp), str(tmp / "runs.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)  # a hang fails here
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, lambda name, rank: torch.load(tmp / f"{name}.rank{rank}.pt", weights_only=True)


def test_two_processes_agree_and_an_unusable_frame_does_not_hang(launch):
    tmp, result = launch
    run = tmp / "straight"
    records = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    # 4 iterations x 2 frames = 2 epochs: the empty frame came up twice, in either process; it counts once
    assert records[-1]["skipped_frames"] == 1
    assert load_checkpoint(run / "backbone.pth", BACKBONE_FORMAT)["pretrain"]["iteration"] == 4
    ranks = [result("straight", r) for r in (0, 1)]
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt", PRETRAIN_FORMAT)["model"]
    assert len(ranks[0]["parameters"]) > 50
    for key, value in ranks[0]["parameters"].items():
        assert torch.equal(value, ranks[1]["parameters"][key]), key  # the processes stayed in step
    # BatchNorm running statistics are per process (DDP broadcasts process 0's before each forward); the checkpoint
    # is process 0's state
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, checkpoint[key]), key


def test_a_resumed_two_process_run_ends_as_the_straight_run(launch):
    tmp, result = launch
    straight = load_checkpoint(tmp / "straight" / "checkpoints" / "last.pt", PRETRAIN_FORMAT)
    resumed = load_checkpoint(tmp / "resumed" / "checkpoints" / "last.pt", PRETRAIN_FORMAT)
    assert resumed["iteration"] == straight["iteration"] == 4
    assert straight["model"].keys() == resumed["model"].keys()
    for key, value in straight["model"].items():  # weights and process 0's BatchNorm statistics
        assert torch.equal(value, resumed["model"][key]), key
    momentum = lambda ckpt: [s["momentum_buffer"] for _, s in sorted(ckpt["optimizer"]["state"].items())]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(momentum(straight), momentum(resumed), strict=True))
    assert straight["scheduler"] == resumed["scheduler"]
    for key, value in result("straight", 1)["state"].items():  # process 1 too (its BatchNorm statistics included)
        assert torch.equal(value, result("resumed", 1)["state"][key]), key
    assert result("straight", 0)["losses"][2:] == result("resumed", 0)["losses"]  # iterations 3 and 4
    logged = lambda name: [(r["iteration"], r["loss"]) for r in read_metrics(tmp / name / "metrics.jsonl")]  # noqa: E731
    assert logged("resumed") == logged("straight")


def test_the_gathered_loss_is_the_formula_over_the_pairs_of_all_processes(launch):
    """Process r holds n_r = 3 + 2r pairs. With a = [z3d_0; z3d_1], b = [z2d_0; z2d_1] (N = 8 rows) the 1-process loss is
    L = -(1/N) sum_i log(exp(a_i.b_i / tau) / sum_j exp(a_i.b_j / tau)); DDP averages the processes' losses and
    gradients, so mean_r L_r = L and (gradient of process r) / W = dL / d(its rows)."""
    _, result = launch
    parts = [result("loss_formula", r) for r in (0, 1)]
    world, tau = parts[0]["world"], parts[0]["tau"]
    a = torch.cat([p["z3d"] for p in parts]).requires_grad_(True)
    b = torch.cat([p["z2d"] for p in parts]).requires_grad_(True)
    assert a.shape == (8, 8)
    logits = a @ b.T / tau
    loss = -(logits.diagonal() - logits.exp().sum(dim=1).log()).mean()
    loss.backward()
    assert abs(sum(p["loss"].item() for p in parts) / world - loss.item()) < 1e-12
    rows = [slice(0, 3), slice(3, 8)]
    for p, r in zip(parts, rows):
        torch.testing.assert_close(p["grad_z3d"] / world, a.grad[r], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(p["grad_z2d"] / world, b.grad[r], rtol=1e-10, atol=1e-12)
    # process 0's loss alone is not its points' mean over its own pixels: its 3 points have 8 candidates each
    own = a[:3].detach() @ b[:3].detach().T / tau
    assert abs(parts[0]["loss"].item() - (-(own.diagonal() - own.exp().sum(1).log()).mean().item())) > 1e-3


def test_gathered_negatives_in_two_processes_equal_one_process_over_the_whole_batch(launch):
    """Same global batches (frames 2i and 2i+1 of iteration i: one per process, or both in one process), every voxel a
    pair, no BatchNorm (its statistics are per process): the DDP-averaged loss and the weights after each step equal
    the 1-process run's."""
    _, result = launch
    single, gathered = result("single", 0), [result("gathered", r) for r in (0, 1)]
    assert len(single["losses"]) == len(gathered[0]["losses"]) == 2
    for it in range(2):  # iteration 2 runs on the weights after one step
        mean = (gathered[0]["losses"][it] + gathered[1]["losses"][it]) / 2
        assert abs(mean - single["losses"][it]) < 1e-5 * single["losses"][it], (it, mean, single["losses"][it])
    assert single["parameters"].keys() == gathered[0]["parameters"].keys()
    for key, value in single["parameters"].items():
        assert torch.equal(gathered[0]["initial"][key], single["initial"][key]), key
        assert torch.equal(gathered[0]["parameters"][key], gathered[1]["parameters"][key]), key  # DDP kept them in step
        step = value - single["initial"][key]  # what the 2 SGD steps changed, to be matched within 0.1%
        torch.testing.assert_close(gathered[0]["parameters"][key] - single["initial"][key], step,
                                   rtol=1e-3, atol=1e-3 * step.abs().max().item(), msg=key)
    assert all(bool((v != single["initial"][k]).any()) for k, v in single["parameters"].items())  # every one moved
