"""Short real pretraining runs on bundled frames: the loss falls, stop + resume equals no stop, bad input is handled."""
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ppkt
from ppkt.cli import main as cli_main
from ppkt.config import load_config
from ppkt.data.frames import FrameError
from ppkt.data.pairs import PixelPointFrames
from ppkt.errors import Interrupted
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, load_checkpoint, load_state_strict
from ppkt.train.logging import read_metrics
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
TINY = [
    f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "data.stride=4",
    "augment.resize=[0.9,1.1]", "student.arch=SR-UNet14", "student.channels=[8,16,32,32,32,32,24,24]",
    "teacher.arch=efficientnet_lite0", "teacher.stage=stage4", "loss.n_sub=256", "loss.embed_dim=32",
    "optim.lr=0.05", "optim.lr_step=1000", "train.batch_size=2", "train.workers=0", "train.log_every=1", "train.threads=2",
]

pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # the runs set train.threads


def tiny_config(out: Path, *extra: str):
    return load_config(ROOT / "configs" / "pretrain_demo.yaml", TINY + [f"train.out_dir={out}", *extra])


def test_short_pretraining_lowers_the_loss(tmp_path, capsys):
    out = pretrain(tiny_config(tmp_path / "run", "train.iterations=40", "train.checkpoint_every=100"))
    records = read_metrics(out / "metrics.jsonl")
    losses = [r["loss"] for r in records]
    assert len(losses) == 40
    for r in records:  # where the time went: waiting for data + computing
        assert r["data_s"] >= 0 and r["step_s"] > 0 and r["iteration_s"] == pytest.approx(r["data_s"] + r["step_s"])
        assert 100 < r["rss_mib"] < 20000
    # at the start the 3D embeddings carry no information: the loss is at least chance, log(n_sub)
    assert losses[0] > np.log(256) - 0.2
    assert np.mean(losses[-5:]) < min(losses[0] - 2.0, np.log(256) - 0.2)
    assert (out / "loss_curve.png").stat().st_size > 1000 and any((out / "tensorboard").iterdir())
    export = load_checkpoint(out / "backbone.pth", BACKBONE_FORMAT)
    student = build_sparse_unet(export["arch"], export["in_channels"], export["channels"])
    load_state_strict(student, export["state_dict"], out / "backbone.pth", "backbone")
    # what made it, in the export and as `ppkt info` prints it
    about = export["pretrain"]
    assert about["iteration"] == 40 and about["voxel_size"] == 0.1 and about["input_features"] == "color"
    assert about["loss"] == pytest.approx(losses[-1], rel=1e-5) and about["frames"] > 0
    assert about["ppkt_version"] == ppkt.__version__ and about["commit"]
    capsys.readouterr()
    assert cli_main(["info", str(out / "backbone.pth"), str(out / "checkpoints" / "last.pt")]) == 0
    text = capsys.readouterr().out
    assert "ppkt backbone export" in text and "iteration: 40" in text and f"loss: {losses[-1]:.6g}" in text
    assert "ppkt pretraining checkpoint" in text and "iteration: 40 of 40" in text
    assert f"written by: ppkt {ppkt.__version__}, commit {about['commit']}" in text
    # the benchmarks know an input by its weights: the same weights with other metadata are the same input
    from ppkt.checkpoint import save_atomic
    from ppkt.train.run_dir import weights_digest

    save_atomic({**export, "pretrain": {**about, "commit": "another"}}, tmp_path / "restamped.pth")
    assert weights_digest(tmp_path / "restamped.pth") == weights_digest(out / "backbone.pth")
    changed = {k: v + 1 if k.endswith("weight") else v for k, v in export["state_dict"].items()}
    save_atomic({**export, "state_dict": changed}, tmp_path / "changed.pth")
    assert weights_digest(tmp_path / "changed.pth") != weights_digest(out / "backbone.pth")


def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    args = ["train.iterations=6", "train.checkpoint_every=3"]
    straight = pretrain(tiny_config(tmp_path / "straight", *args))
    stopped = pretrain(tiny_config(tmp_path / "stopped", *args), stop_after=3)
    # a run not finished never leaves a file named like a finished export
    assert (stopped / "backbone.partial.pth").is_file() and not (stopped / "backbone.pth").exists()
    assert load_checkpoint(stopped / "backbone.partial.pth", BACKBONE_FORMAT)["pretrain"]["iteration"] == 3
    resumed = pretrain(tiny_config(tmp_path / "stopped", *args), resume=True)
    assert (resumed / "backbone.pth").is_file() and not (resumed / "backbone.partial.pth").exists()
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    loss = lambda run: [r["loss"] for r in read_metrics(run / "metrics.jsonl")]
    assert loss(straight) == loss(resumed)


def test_resume_refuses_a_changed_config_and_keeps_config_yaml(tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(tiny_config(run, "train.iterations=1"))
    written = (run / "config.yaml").read_text()
    demo = str(ROOT / "configs" / "pretrain_demo.yaml")
    changed = [*TINY, f"train.out_dir={run}", "train.iterations=2", "student.arch=SR-UNet18", "loss.temperature=0.07"]
    assert cli_main(["pretrain", "--config", demo, "--resume", *changed]) == 2
    err = capsys.readouterr().err
    assert "student.arch: 'SR-UNet14' -> 'SR-UNet18'" in err and "loss.temperature: 0.04 -> 0.07" in err
    assert "train.iterations" not in err.split("Changed:")[1]  # a safe key is not reported
    assert (run / "config.yaml").read_text() == written
    assert load_checkpoint(run / "checkpoints" / "last.pt", PRETRAIN_FORMAT)["iteration"] == 1
    # only safe keys changed (iterations, threads): the run continues, config.yaml stays as the run began
    pretrain(tiny_config(run, "train.iterations=2", "train.threads=1"), resume=True)
    assert load_checkpoint(run / "checkpoints" / "last.pt", PRETRAIN_FORMAT)["iteration"] == 2
    assert (run / "config.yaml").read_text() == written


def test_a_new_run_never_replaces_an_old_one(tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(tiny_config(run, "train.iterations=1"))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    demo = str(ROOT / "configs" / "pretrain_demo.yaml")
    assert cli_main(["pretrain", "--config", demo, *TINY, f"train.out_dir={run}", "train.iterations=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppkt: error: ") and "--resume" in err and "--overwrite" in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    events = lambda: sorted(p.name for p in (run / "tensorboard").iterdir())  # noqa: E731
    old_events = events()
    pretrain(tiny_config(run, "train.iterations=1", "optim.lr=0.01"), overwrite=True)
    assert len(events()) == 1 and events() != old_events  # no mixed TensorBoard event files
    assert "lr: 0.01" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size: must be an integer >= 1, got 0"),
    ("data.voxel_size=0", "data.voxel_size: must be > 0 and <= 0.5 metres (a room is a few metres; the networks "
                          "downsample 16 times), got 0.0"),
    ("loss.temperature=-1", "loss.temperature: must be > 0, got -1.0"),
    ("loss.n_sub=1", "loss.n_sub: must be an integer >= 2, got 1"),
    ("data.image_size=[0,80]", "data.image_size: must be [H, W] in pixels, both >= 1"),
    ("loss.projection=bilinear", "loss.projection: must be one of upl, pl; got 'bilinear'"),
    ("train.device=gpu", "train.device: 'gpu' is not a device; use auto, cpu, cuda or cuda:N"),
])
def test_config_errors_come_before_any_work(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    demo = str(ROOT / "configs" / "pretrain_demo.yaml")
    assert cli_main(["pretrain", "--config", demo, *TINY, f"train.out_dir={run}", override]) == 2
    assert f"ppkt: error: {message}" in capsys.readouterr().err
    assert not run.exists()


def test_interrupt_saves_the_current_iteration_and_resume_ends_equal(tmp_path):
    """SIGINT long before the first periodic checkpoint: the iteration in progress is finished and saved."""
    args = ["train.iterations=14", "train.checkpoint_every=1000"]
    straight = pretrain(tiny_config(tmp_path / "straight", *args))
    run = tmp_path / "stopped"
    metrics = run / "metrics.jsonl"

    def interrupt_after_two_iterations():
        deadline = time.time() + 120
        while time.time() < deadline and len(read_metrics(metrics)) < 2:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_after_two_iterations, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        pretrain(tiny_config(run, *args))
    saved = load_checkpoint(run / "checkpoints" / "last.pt", PRETRAIN_FORMAT)["iteration"]
    assert 2 <= saved < 14 and stopped.value.exit_code == 130
    assert f"after iteration {saved} of 14" in str(stopped.value) and "--resume" in str(stopped.value)
    assert read_metrics(metrics)[-1]["iteration"] == saved
    pretrain(tiny_config(run, *args), resume=True)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_unusable_frames_are_replaced_and_counted_once(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(FRAMES / "camera-intrinsics.txt", frames)
    for n in ("000000", "000200", "000400"):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(FRAMES / f"frame-{n}.{kind}", frames)
    Image.fromarray(np.zeros((480, 640), dtype=np.uint16)).save(frames / "frame-000200.depth.png")
    dataset = PixelPointFrames(tiny_config(tmp_path / "x", f"data.roots=[{frames}]", "data.stride=1").data,
                         tiny_config(tmp_path / "x").augment)
    sample = dataset[(1, 7)]  # the empty frame: replaced by the next one, drawn with the same seed
    assert [r[0] for r in sample.replaced] == [f"{frames} frame 000200"] and "no valid depth" in sample.replaced[0][1]
    assert torch.equal(sample.coords, dataset[(2, 7)].coords)
    out = pretrain(tiny_config(tmp_path / "run", f"data.roots=[{frames}]", "data.stride=1", "train.iterations=3", "train.batch_size=3"))
    records = read_metrics(out / "metrics.jsonl")
    assert [r["skipped_frames"] for r in records] == [1, 1, 1]  # the empty frame, counted once, not per iteration

    # every frame unusable: one clear error when the first batch meets it, and the run's folder is gone again
    for n in ("000000", "000400"):
        Image.fromarray(np.zeros((480, 640), dtype=np.uint16)).save(frames / f"frame-{n}.depth.png")
    with pytest.raises(FrameError, match="none of the 3 frames .* is usable"):
        pretrain(tiny_config(tmp_path / "none", f"data.roots=[{frames}]", "data.stride=1", "train.iterations=3",
                             "train.batch_size=3", "train.workers=0"))
    assert not (tmp_path / "none").exists()


def test_cli_lists_commands_and_reports_bad_config(capsys, tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    assert "pretrain" in capsys.readouterr().out
    assert cli_main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "--config: " in (err := capsys.readouterr().err) and "missing.yaml: no such file" in err
    assert cli_main(["pretrain", "--config", str(ROOT / "configs" / "pretrain_demo.yaml"), f"data.roots=[{tmp_path}]",
                     f"train.out_dir={tmp_path / 'run'}"]) == 2
    assert f"ppkt: error: {tmp_path}: no RGB-D frame folders found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_pretraining_on_other_input_features_exports_them(tmp_path):
    from ppkt.data.features import NO_COLOR
    from ppkt.data.pairs import PixelPointFrames
    from ppkt.models.segmentor import Segmentor, load_backbone

    out = pretrain(tiny_config(tmp_path / "cn", "train.iterations=2", "data.features=color+normal",
                               "augment.color_dropout=0.5"))
    export = load_checkpoint(out / "backbone.pth", BACKBONE_FORMAT)
    assert export["in_channels"] == 6 and export["pretrain"]["input_features"] == "color+normal"
    assert export["pretrain"]["color_dropout"] == 0.5
    report = load_backbone(Segmentor(export["arch"], 4, 6, export["channels"]), out / "backbone.pth", "color+normal")
    assert not report.missing or all(k.startswith("head.") for k in report.missing)
    # colour dropout 1: every frame's colour reaches the student as the constant of no colour
    cfg = tiny_config(tmp_path / "x", "augment.color_dropout=1.0")
    sample = PixelPointFrames(cfg.data, cfg.augment)[(0, 5)]
    assert sample.feats.shape[1] == 3 and (sample.feats == NO_COLOR).all()


def test_a_run_beyond_the_machines_memory_is_refused_and_one_beyond_the_free_memory_warned(tmp_path, monkeypatch,
                                                                                           capsys):
    from ppkt.config import ConfigError
    from ppkt.train import run

    cfg = tiny_config(tmp_path / "run", "train.iterations=1")
    h, w = cfg.data.image_size
    estimate = 2**29 + 4096 * cfg.train.batch_size * h * w  # the model of Pretraining.memory, written out
    monkeypatch.setattr(run, "machine_memory", lambda: (estimate - 1, estimate - 1))
    with pytest.raises(ConfigError, match=rf"train.batch_size={cfg.train.batch_size} at data.image_size=\[{h}, {w}\] "
                                          r"needs about .* GiB of memory; this machine has"):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(run, "machine_memory", lambda: (estimate + 1, estimate - 1))
    pretrain(cfg)
    assert "warning: train.batch_size=" in capsys.readouterr().out
