"""Fine-tuning on tiny hand-built scenes: backbone loading, the loss falls, evaluation files, exact resume, label fraction."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli import main as ppkt
from ppkt.config import ConfigError, load_config
from ppkt.models.segmentor import Segmentor, load_backbone
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, CheckpointError, save_atomic
from ppkt.train.finetune import finetune
from ppkt.train.finetune_config import FinetuneConfig, validate_finetune
from ppkt.train.logging import read_metrics
from ppkt.train.metrics import confusion_matrix

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = [8, 16, 16, 16, 16, 16, 16, 16]
NAMES = ["floor", "box", "cylinder"]
COLORS = [[10, 200, 10], [250, 0, 0], [0, 0, 250]]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def tiny_scene(folder: Path, seed: int) -> None:
    """A 1.6 m floor (class 0, grey), a box (1, red) and a cylinder (2, blue) on it; about 9000 points, 2 cm apart."""
    rng = np.random.default_rng(seed)
    g = np.arange(0, 1.6, 0.02)
    fx, fy = np.meshgrid(g, g)
    parts = [(np.stack([fx.ravel(), fy.ravel(), np.zeros(fx.size)], 1), 0, (120, 120, 110))]
    bx, by = rng.uniform(0.1, 0.5, 2)
    s = np.arange(0, 0.4, 0.02)
    u, v = (a.ravel() for a in np.meshgrid(s, s))
    box = [np.stack([u, v, np.full_like(u, 0.4)], 1), np.stack([u, np.zeros_like(u), v], 1),
           np.stack([u, np.full_like(u, 0.4), v], 1), np.stack([np.zeros_like(u), u, v], 1), np.stack([np.full_like(u, 0.4), u, v], 1)]
    parts.append((np.concatenate(box) + [bx, by, 0.02], 1, (200, 40, 40)))
    cx, cy = rng.uniform(1.0, 1.3, 2)
    t, h = np.meshgrid(np.linspace(0, 2 * np.pi, 60, endpoint=False), np.arange(0.02, 0.6, 0.02))
    parts.append((np.stack([cx + 0.2 * np.cos(t.ravel()), cy + 0.2 * np.sin(t.ravel()), h.ravel()], 1), 2, (40, 60, 200)))
    coord = np.concatenate([p for p, _, _ in parts]).astype(np.float32)
    segment = np.concatenate([np.full(len(p), c) for p, c, _ in parts]).astype(np.int64)
    color = np.concatenate([np.tile(rgb, (len(p), 1)) for p, _, rgb in parts]) + rng.normal(0, 8, (len(coord), 3))
    segment[rng.random(len(segment)) < 0.02] = -1  # a few unlabelled points
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", coord)
    np.save(folder / "color.npy", np.clip(color, 0, 255).astype(np.uint8))
    np.save(folder / "segment.npy", segment)


def tiny_dataset(root: Path, train: int = 2, val: int = 1) -> Path:
    names = {"train": [f"scene_{i:04d}" for i in range(train)], "val": [f"scene_{i:04d}" for i in range(train, train + val)]}
    (root / "splits").mkdir(parents=True)
    for split, scenes in names.items():
        for name in scenes:
            tiny_scene(root / "scenes" / name, seed=int(name[-4:]))
        (root / "splits" / f"{split}.txt").write_text("".join(n + "\n" for n in scenes))
    (root / "classes.json").write_text(json.dumps({"names": NAMES, "colors": COLORS, "ignore_index": -1}))
    return root


def tiny_overrides(data: Path, out: Path, *extra: str) -> list:
    return [f"data.root={data}", f"data.classes={data / 'classes.json'}", "data.voxel_size=0.05", "model.arch=SR-UNet14",
            f"model.channels={CHANNELS}".replace(" ", ""), "train.batch_size=2", "train.workers=0", "train.threads=1",
            "train.log_every=1", "train.eval_every=0", f"train.out_dir={out}", *extra]


def tiny_config(data: Path, out: Path, *extra: str) -> FinetuneConfig:
    return load_config(ROOT / "configs" / "finetune_synthetic.yaml", tiny_overrides(data, out, *extra), FinetuneConfig)


def backbone_file(path: Path, arch: str = "SR-UNet14", channels=CHANNELS, state=None) -> Path:
    torch.manual_seed(1)
    net = build_sparse_unet(arch, 3, channels)
    return save_atomic({"format": BACKBONE_FORMAT, "arch": arch, "in_channels": 3, "channels": list(channels),
                        "state_dict": net.state_dict() if state is None else state, "pretrain": {"iteration": 7}}, path)


def test_pretrained_backbone_loads_and_the_head_is_new(tmp_path):
    path = backbone_file(tmp_path / "backbone.pth")
    model = Segmentor("SR-UNet14", 3, 3, CHANNELS)
    head_before = model.head.weight.clone()
    report = load_backbone(model, path)
    export = torch.load(path, weights_only=True)["state_dict"]
    assert sorted(report.loaded) == sorted("backbone." + k for k in export)
    assert report.missing == ["head.weight", "head.bias"] and not report.unexpected and not report.mismatched
    for key, value in export.items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert torch.equal(model.head.weight, head_before)
    assert "new" in report.summary() and "head.weight" in report.summary()


def test_backbone_of_another_architecture_or_without_matching_keys_fails(tmp_path):
    model = Segmentor("SR-UNet14", 3, 3, CHANNELS)
    with pytest.raises(CheckpointError, match=r"other\.pth.*SR-UNet18.*model is SR-UNet14"):
        load_backbone(model, backbone_file(tmp_path / "other.pth", arch="SR-UNet18"))
    with pytest.raises(CheckpointError, match=r"wide\.pth.*channels=\[16, 32"):
        load_backbone(model, backbone_file(tmp_path / "wide.pth", channels=[16, 32, 64, 128, 128, 64, 48, 48]))
    with pytest.raises(CheckpointError, match=r"foreign\.pth: no tensor of this file matches"):
        load_backbone(model, backbone_file(tmp_path / "foreign.pth", state={"encoder.weight": torch.zeros(3, 3)}))
    save_atomic({"format": PRETRAIN_FORMAT}, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match="backbone.pth"):
        load_backbone(model, tmp_path / "last.pt")


def test_finetuning_lowers_the_loss_and_evaluate_writes_its_files(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    backbone = backbone_file(tmp_path / "backbone.pth")
    out = tmp_path / "run"
    args = ["finetune", "--config", str(ROOT / "configs" / "finetune_synthetic.yaml"), "--pretrained", str(backbone),
            *tiny_overrides(data, out, "train.iterations=12", "train.checkpoint_every=100", "train.eval_every=6", "optim.warmup=0")]
    assert ppkt(args) == 0
    printed = capsys.readouterr().out
    assert "loaded" in printed and "head.weight" in printed and "mIoU" in printed
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
    val = {r["iteration"]: r["val_miou"] for r in read_metrics(out / "metrics.jsonl") if "val_miou" in r}
    assert list(val) == [6, 12]
    assert ppkt(["info", str(out / "eval" / "metrics.json")]) == 0
    assert f"mIoU {100 * val[12]:.2f}" in capsys.readouterr().out
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    first_best = 6 if val[6] >= val[12] else 12
    assert best["iteration"] == first_best and best["val"]["miou"] == max(val.values())
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["best"] == {"iteration": first_best, "miou": max(val.values())}
    assert f"best on val: iteration {first_best}" in printed
    assert (out / "loss_curve.png").stat().st_size > 1000 and (out / "eval" / "metrics.json").is_file()

    assert ppkt(["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data", str(data),
                     "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["class_names"] == NAMES and metrics["iteration"] == 12 and metrics["scenes"] == 1
    # better than chance: the best prediction that ignores the input, the majority class everywhere, scores
    # allAcc = f_max (its frequency), mIoU = f_max / C (IoU f_max for it, 0 for the others) and mAcc = 1 / C.
    # Measured (train.seed 0, 1, 2): mIoU 0.72-0.79, allAcc 0.88-0.91, mAcc 0.78-0.84 against 0.21, 0.63, 0.33.
    freq = np.bincount(np.load(data / "scenes" / "scene_0002" / "segment.npy") + 1, minlength=4)[1:]
    f_max, classes = freq.max() / freq.sum(), int((freq > 0).sum())
    assert classes == 3 and 0.5 < f_max < 0.75
    assert metrics["allacc"] > f_max + 0.15 and metrics["miou"] > f_max / classes + 0.3 and metrics["macc"] > 1 / classes + 0.25
    n = len(np.load(data / "scenes" / "scene_0002" / "coord.npy"))
    labelled = int((np.load(data / "scenes" / "scene_0002" / "segment.npy") >= 0).sum())
    assert metrics["count"] == labelled
    assert (tmp_path / "ev" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    from plyfile import PlyData

    for kind in ("pred", "gt"):
        rows = PlyData.read(str(tmp_path / "ev" / "ply" / f"scene_0002_{kind}.ply"))["vertex"].data
        assert len(rows) == n
        xyz = np.stack([rows["x"], rows["y"], rows["z"]], 1)
        rgb = np.stack([rows["red"], rows["green"], rows["blue"]], 1)
        assert np.allclose(xyz, np.load(data / "scenes" / "scene_0002" / "coord.npy"))
        shown = rows["pred"] if kind == "pred" else rows["label"]
        assert (rgb[shown >= 0] == np.array(COLORS)[shown[shown >= 0]]).all()  # the classes.json colours
        assert (rows["label"] == np.load(data / "scenes" / "scene_0002" / "segment.npy")).all()
        conf = confusion_matrix(torch.from_numpy(rows["pred"].copy()), torch.from_numpy(rows["label"].copy()), 3, -1)
        assert conf.tolist() == metrics["confusion_matrix"]  # the scores are those of the exported points
    assert "mIoU" in capsys.readouterr().out


def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    args = ["train.iterations=6", "train.checkpoint_every=3", "data.val_split=''"]
    straight = finetune(tiny_config(data, tmp_path / "straight", *args))
    finetune(tiny_config(data, tmp_path / "stopped", *args), stop_after=3)
    resumed = finetune(tiny_config(data, tmp_path / "stopped", *args), resume=True)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    loss = lambda run: [r["loss"] for r in read_metrics(run / "metrics.jsonl")]  # noqa: E731
    assert loss(straight) == loss(resumed)
    with pytest.raises(ConfigError, match=r"(?s)last\.pt: the run was made with another config.*model\.arch: 'SR-UNet14' -> 'SR-UNet18'"):
        finetune(tiny_config(data, tmp_path / "stopped", *args, "model.arch=SR-UNet18"), resume=True)
    with pytest.raises(ConfigError, match=r"train\.iterations: 6 -> 8"):  # the poly schedule is defined over it
        finetune(tiny_config(data, tmp_path / "stopped", "train.iterations=8", *args[1:]), resume=True)


def test_label_fraction_writes_the_chosen_scenes_and_cli_errors_are_clear(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", train=5, val=0)
    out = finetune(tiny_config(data, tmp_path / "run", "data.label_fraction=0.4", "data.val_split=''", "train.iterations=1"))
    chosen = (out / "train_scenes.txt").read_text().split()
    assert len(chosen) == 2 and set(chosen) <= {f"scene_{i:04d}" for i in range(5)}
    again = finetune(tiny_config(data, tmp_path / "again", "data.label_fraction=0.4", "data.val_split=''", "train.iterations=1"))
    assert (again / "train_scenes.txt").read_text().split() == chosen  # fixed by the seed

    assert ppkt(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert f"--checkpoint: {tmp_path / 'none.pt'}: no such file" in capsys.readouterr().err
    assert ppkt(["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data", str(tmp_path / "nodata")]) == 2
    assert f"--data: {tmp_path / 'nodata'}: no such folder" in capsys.readouterr().err
    config = str(ROOT / "configs" / "finetune_synthetic.yaml")
    assert ppkt(["finetune", "--config", config, f"data.root={data}", "data.classes=nosuchset"]) == 2
    assert "unknown class set 'nosuchset'" in capsys.readouterr().err
    assert ppkt(["finetune", "--config", config, "optim.name=adam"]) == 2
    assert "optim.name: must be one of sgd, adamw; got 'adam'" in capsys.readouterr().err
    # a loss that diverges is a failure of the run (exit 1), named by the iteration the progress line shows
    args = ["finetune", "--config", config, *tiny_overrides(data, tmp_path / "lr", "data.val_split=''", "optim.lr=1e30",
                                                            "train.iterations=3")]
    assert ppkt(args) == 1
    err = capsys.readouterr().err
    assert "ppkt: error: iteration 2: the loss is nan; lower optim.lr" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["finetune_synthetic", "finetune_scannet", "finetune_s3dis"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", (), FinetuneConfig)
    validate_finetune(cfg)
    assert cfg.model.arch in ("SR-UNet14", "SR-UNet34") and cfg.optim.name == "sgd"


def test_sigterm_saves_the_iteration_and_says_how_to_resume(tmp_path):
    """The real command in its own process: SIGTERM long before a periodic checkpoint; exit status 128 + 15."""
    data = tiny_dataset(tmp_path / "data")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ppkt.cli", "finetune", "--config", str(ROOT / "configs" / "finetune_synthetic.yaml"),
           *tiny_overrides(data, out, "train.iterations=400", "train.checkpoint_every=1000", "train.log_every=1",
                           "data.val_split=''")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline and len(read_metrics(out / "metrics.jsonl")) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["iteration"]
    assert 2 <= saved < 400 and f"SIGTERM: stopped after iteration {saved} of 400" in err and "--resume" in err
    assert f"SIGTERM: stopping after iteration {saved}, which is saved first" in err  # said at once, before the save
    assert "Traceback" not in err


@pytest.mark.parametrize("extra, problem", [
    (["train.batch_size=100"], "train.batch_size: 100, but the training data holds 2 sample(s)"),
    (["data.limited_points=0"], "data.limited_points: must be null (all labels) or >= 1 labelled points per scene"),
    (["data.val_split=bad"], "segment.npy"),  # a val scene's label out of range: found before any folder exists
])
def test_nonsense_settings_and_bad_scenes_are_refused_before_the_run_folder_exists(extra, problem, tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    bad = data / "scenes" / "scene_bad"
    tiny_scene(bad, seed=9)
    segment = np.load(bad / "segment.npy")
    segment[5] = 77  # no such class
    np.save(bad / "segment.npy", segment)
    (data / "splits" / "bad.txt").write_text("scene_bad\n")
    out = tmp_path / "run"
    args = ["finetune", "--config", str(ROOT / "configs" / "finetune_synthetic.yaml"),
            *tiny_overrides(data, out, "train.iterations=2", *extra)]
    assert ppkt(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppkt: error: ") and problem in err and "Traceback" not in err
    assert not out.exists()


def test_a_bad_scene_met_in_a_loader_worker_is_one_clear_error(tmp_path, capsys):
    """Out-of-range labels are found when the scene is loaded, inside a DataLoader worker process."""
    data = tiny_dataset(tmp_path / "data")
    segment = data / "scenes" / "scene_0001" / "segment.npy"
    labels = np.load(segment)
    labels[5] = 7  # 3 classes
    np.save(segment, labels)
    config = str(ROOT / "configs" / "finetune_synthetic.yaml")
    assert ppkt(["finetune", "--config", config, *tiny_overrides(data, tmp_path / "run", "train.workers=1",
                                                                 "train.iterations=2", "data.val_split=''")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ppkt: error: {segment} holds class id 7, but class set") and "Traceback" not in err


def test_official_few_label_files_drive_a_run(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data", train=3, val=0)
    (tmp_path / "1.txt").write_text("scene_0002\n")
    torch.save({"scene_0002": np.array([0, 5, 9000], dtype=np.int64)}, tmp_path / "points20")
    out = finetune(tiny_config(data, tmp_path / "run", f"data.scenes_file={tmp_path / '1.txt'}",
                               f"data.points_file={tmp_path / 'points20'}", "data.val_split=''", "train.iterations=1"))
    assert (out / "train_scenes.txt").read_text().split() == ["scene_0002"]
    capsys.readouterr()
    assert ppkt(["info", str(out / "checkpoints" / "last.pt")]) == 0
    text = capsys.readouterr().out
    assert "segmentation fine-tuning checkpoint" in text and "iteration: 1 of 1" in text and "training scenes: 1" in text
    assert "classes: 3" in text and "started from: scratch" in text and "written by: ppkt" in text
    config = str(ROOT / "configs" / "finetune_synthetic.yaml")
    torch.save({"scene_0002": np.array([0, 10 ** 6])}, tmp_path / "bad")
    assert ppkt(["finetune", "--config", config, *tiny_overrides(data, tmp_path / "bad_run", "data.val_split=''",
                                                                   f"data.points_file={tmp_path / 'bad'}")]) == 2
    err = capsys.readouterr().err
    assert "scene_0002 has" in err and "point index 1000000" in err and str(tmp_path / "bad") in err


def test_input_features_train_evaluate_and_refuse_a_backbone_of_other_features(tmp_path, capsys):
    from ppkt.checkpoint import load_checkpoint
    from ppkt.data.features import NO_COLOR, voxel_normals
    from ppkt.data.scenes import SegScenes, get_class_set, list_scenes

    data = tiny_dataset(tmp_path / "data")
    for features, channels in (("none", 3), ("color+normal", 6)):
        out = finetune(tiny_config(data, tmp_path / features, f"data.features={features}", "train.iterations=2"))
        state = load_checkpoint(out / "checkpoints" / "last.pt", "ppkt-finetune")
        assert state["model"]["backbone.conv_input.0.weight"].shape[-1] == channels
        assert 0 <= json.loads((out / "eval" / "metrics.json").read_text())["miou"] <= 1
    # colour dropout 1: every training sample's input is the constant input of a geometry-only run
    classes, scenes = get_class_set(data / "classes.json"), list_scenes(data, "train")
    dropped = SegScenes(scenes, classes, 0.05, max_voxels=500, seed=3, color_dropout=1.0)[(0, 7)]
    geometry = SegScenes(scenes, classes, 0.05, max_voxels=500, seed=3, features="none")[(0, 7)]
    assert torch.equal(dropped.coords, geometry.coords) and torch.equal(dropped.feats, geometry.feats)
    assert (geometry.feats == NO_COLOR).all()
    # normals of a flat floor are vertical
    grid = torch.cartesian_prod(torch.arange(20), torch.arange(20), torch.zeros(1, dtype=torch.long))
    assert (voxel_normals(grid)[:, 2].abs() > 0.999).all()
    # a wall x = 0 beside a floor z = 0, both 10 voxels wide: normals away from the corner region are +x and +z
    wall = torch.cartesian_prod(torch.zeros(1, dtype=torch.long), torch.arange(10), torch.arange(1, 10))
    floor = torch.cartesian_prod(torch.arange(1, 10), torch.arange(10), torch.zeros(1, dtype=torch.long))
    n = voxel_normals(torch.cat([wall, floor]))
    far_wall, far_floor = (wall[:, 2] >= 4), (floor[:, 0] >= 4)
    assert torch.allclose(n[:len(wall)][far_wall], torch.tensor([1.0, 0, 0]).expand(int(far_wall.sum()), 3), atol=1e-5)
    assert torch.allclose(n[len(wall):][far_floor], torch.tensor([0, 0, 1.0]).expand(int(far_floor.sum()), 3), atol=1e-5)
    # a colour backbone for a normals run: refused naming both, or adapted on request
    backbone = backbone_file(tmp_path / "colour.pth")
    assert ppkt(["finetune", "--config", str(ROOT / "configs" / "finetune_synthetic.yaml"), "--pretrained",
                 str(backbone), *tiny_overrides(data, tmp_path / "n", "data.features=normal", "train.iterations=1")]) == 2
    err = capsys.readouterr().err
    assert "pretrained on color input" in err and "reads normal" in err and "model.adapt_input=true" in err
    finetune(tiny_config(data, tmp_path / "adapted", "data.features=color+normal", "model.adapt_input=true",
                         f"model.pretrained={backbone}", "train.iterations=1"))
    assert "input adapted from color to color+normal: channels r, g, b kept, nx, ny, nz new (zero)" in capsys.readouterr().out
