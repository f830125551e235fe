"""`ppkt prepare scannet`: .sens -> exported frames; invalid poses skipped, interruption resumed, pretraining reads it."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sens_writer import kitchen_frames, write_sens

from ppkt.cli import main as cli_main
from ppkt.config import load_config
from ppkt.data.frames import FrameError, find_frame_folders, open_frame_folder
from ppkt.data.sens import SensReader
from ppkt.prepare.folders import MARKER
from ppkt.prepare.scannet_frames import export_scans
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """ScanNet's scans/ layout with two scans of real frames; frame 4 of scene0001_00 has ScanNet's -inf pose."""
    frames, K_color, K_depth = kitchen_frames(count=10)
    root = tmp_path_factory.mktemp("scans")
    for scan, sub in (("scene0000_00", frames[:6]), ("scene0001_00", frames)):
        (root / scan).mkdir()
        sub = [dict(f) for f in sub]
        if scan == "scene0001_00":
            sub[4]["pose"] = np.full((4, 4), -np.inf)
        write_sens(root / scan / f"{scan}.sens", sub, K_color, K_depth)
    return root, frames, K_depth


def test_export_every_2_writes_the_expected_frames(scans, tmp_path):
    root, frames, K_depth = scans
    summary = export_scans(root, tmp_path, every=2, workers=1, progress=False)
    assert (summary.scans, summary.exported, summary.frames, summary.invalid_pose_frames) == (2, 2, 3 + 4, 1)
    scan = tmp_path / "scene0001_00"
    names = sorted(int(p.stem) for p in (scan / "depth").iterdir())
    assert names == [0, 2, 6, 8]  # every 2nd of 10, frame 4 skipped for its -inf pose
    assert sorted(int(p.stem) for p in (scan / "color").iterdir()) == names == sorted(int(p.stem) for p in (scan / "pose").iterdir())
    assert (scan / MARKER).is_file() and not (tmp_path / "scene0001_00.partial").exists()
    folder = open_frame_folder(scan)
    assert folder.layout == "scannet" and folder.names == ["0", "2", "6", "8"]
    for k, i in enumerate(names):
        fr = folder[k]
        assert fr.color.shape == (480, 640, 3) and np.allclose(fr.intrinsics, K_depth[:3, :3])
        raw = np.asarray(Image.open(scan / "depth" / f"{i}.png"))
        assert raw.dtype == np.uint16 and np.array_equal(raw, frames[i]["depth"])  # depth exact, in mm
        assert np.allclose(fr.pose, frames[i]["pose"].astype(np.float32), atol=1e-7)
        # the 2x color camera, brought back to the depth camera, shows what the original 640x480 color showed
        diff = np.abs(fr.color.astype(int) - frames[i]["small_color"].astype(int))
        assert diff.mean() < 6.0


def test_interrupted_export_resumes_and_matches_an_uninterrupted_one(scans, tmp_path, monkeypatch):
    root, _, _ = scans
    straight = tmp_path / "straight"
    export_scans(root, straight, every=2, progress=False)
    real_getitem = SensReader.__getitem__

    def dies_at_frame_6_of_scan_1(self, i):
        if self.path.stem == "scene0001_00" and i == 6:
            raise KeyboardInterrupt  # the user's Ctrl-C, or a killed job
        return real_getitem(self, i)

    monkeypatch.setattr(SensReader, "__getitem__", dies_at_frame_6_of_scan_1)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        export_scans(root, out, every=2, progress=False)
    assert (out / "scene0000_00" / MARKER).is_file()
    half = out / "scene0001_00.partial"
    assert half.is_dir() and not (out / "scene0001_00").exists() and not (half / MARKER).exists()
    assert find_frame_folders(out) == [out / "scene0000_00"]  # readers never take the half-written scan
    monkeypatch.setattr(SensReader, "__getitem__", real_getitem)
    summary = export_scans(root, out, every=2, progress=False)
    assert (summary.already_done, summary.exported) == (1, 1) and not half.exists()
    for a in sorted(p for p in straight.rglob("*") if p.is_file()):
        b = out / a.relative_to(straight)
        if a.name != MARKER:
            assert b.read_bytes() == a.read_bytes(), b
    again = export_scans(root, out, every=2, progress=False)
    assert (again.already_done, again.exported, again.frames) == (2, 0, 0)
    with pytest.raises(FrameError, match=r"scene0000_00: exported earlier with --every 2, now asked for 3"):
        export_scans(root, out, every=3, progress=False)


def test_cli_exports_in_parallel_reports_failures_and_pretraining_reads_the_result(scans, tmp_path, capsys):
    root, _, _ = scans
    scans_copy = tmp_path / "scans"
    shutil.copytree(root, scans_copy)
    broken = scans_copy / "scene0002_00"
    broken.mkdir()
    data = (root / "scene0000_00" / "scene0000_00.sens").read_bytes()
    (broken / "scene0002_00.sens").write_bytes(data[: len(data) - 5000])  # truncated download
    out = tmp_path / "frames"
    rc = cli_main(["prepare", "scannet", "--scans", str(scans_copy), "--out", str(out), "--every", "2", "--workers", "2"])
    text = capsys.readouterr()
    assert rc == 1
    assert ("3 scans: 2 exported, 0 already done, 1 failed; 7 frames written, 1 skipped for an invalid pose, "
            "0 for corrupt image data") in text.out
    assert "scene0002_00.sens: file is truncated at frame 5 of 6" in text.out  # the summary
    assert "\nerror: " in "\n" + text.err and "scene0002_00.sens: file is truncated" in text.err  # as it happened
    assert find_frame_folders(out) == [out / "scene0000_00", out / "scene0001_00"]
    cfg = load_config(ROOT / "configs" / "pretrain_demo.yaml", [
        f"data.roots=[{out}]", "data.layout=scannet", "data.image_size=[60,80]", "data.voxel_size=0.1",
        "data.frame=world", "student.arch=SR-UNet14", "student.channels=[8,16,32,32,32,32,24,24]",
        "teacher.arch=efficientnet_lite0", "teacher.stage=stage4", "loss.n_sub=128", "loss.embed_dim=16",
        "train.batch_size=2", "train.workers=0", "train.threads=2", "train.iterations=2", f"train.out_dir={tmp_path / 'run'}"])
    run = pretrain(cfg)
    assert (run / "backbone.pth").is_file()


def test_a_frame_with_corrupt_image_data_is_skipped_and_counted(scans, tmp_path):
    root, _, _ = scans
    data = bytearray((root / "scene0000_00" / "scene0000_00.sens").read_bytes())
    with SensReader(root / "scene0000_00" / "scene0000_00.sens") as r:
        start, size = int(r._offsets[2, 1]), int(r._sizes[2, 1])
    data[start: start + size] = b"\xff" * size  # frame 2: its zlib depth is garbage
    (tmp_path / "scans" / "scene0000_00").mkdir(parents=True)
    (tmp_path / "scans" / "scene0000_00" / "scene0000_00.sens").write_bytes(bytes(data))
    summary = export_scans(tmp_path / "scans", tmp_path / "out", every=1, progress=False)
    assert (summary.exported, summary.frames, summary.corrupt_frames) == (1, 5, 1)
    assert sorted(int(p.stem) for p in (tmp_path / "out" / "scene0000_00" / "depth").iterdir()) == [0, 1, 3, 4, 5]
