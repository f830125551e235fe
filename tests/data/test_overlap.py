"""Frame-pair mining (`ppkt overlaps`): frame points against hand-computed geometry, overlaps against brute force,
the pairs file on hand-made and real (7-Scenes, ScanNet layout) scans."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppkt.cli import main
from ppkt.data.frames import FrameError, open_frame_folder
from ppkt.data.overlap import FrameOverlap, frame_points, mine_folder, overlap_matrix, read_overlaps, write_overlaps
from test_frames import DATA, make_7scenes, make_scannet


def brute_overlap(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return float((d2.min(1) <= radius ** 2).mean())


def test_frame_points_are_voxel_means_of_the_world_points():
    # 2 x 2 depth map, K with f = 1, c = (0, 0): pixel (u, v) at depth d -> (u d, v d, d); pose: a shift by t
    depth = np.array([[1.0, 1.0], [0.0, 1.0]], dtype=np.float32)  # pixel (u=0, v=1) invalid
    K = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [10.0, 20.0, 30.0]
    world = np.array([[10.0, 20.0, 31.0], [11.0, 20.0, 31.0], [11.0, 21.0, 31.0]])
    got = frame_points(depth, K, pose, voxel=0.5)  # one point per voxel: the three stay apart
    assert sorted(map(tuple, got.round(9))) == sorted(map(tuple, world))
    got = frame_points(depth, K, pose, voxel=4.0)  # all in one 4 m voxel: their mean
    np.testing.assert_allclose(got, world.mean(0, keepdims=True))


def test_overlap_matrix_equals_brute_force():
    rng = np.random.default_rng(0)
    clouds = [rng.uniform(0, 1, (300, 3)), rng.uniform(0.5, 1.5, (200, 3)), rng.uniform(0, 1, (250, 3)) * 0.3,
              rng.uniform(50, 51, (100, 3))]  # the last one far from all: its boxes never meet the others
    m = overlap_matrix(clouds, radius=0.08)
    for a in range(4):
        for b in range(4):
            want = 1.0 if a == b else brute_overlap(clouds[a], clouds[b], 0.08)
            assert m[a, b] == pytest.approx(want, abs=1e-12), (a, b)
    assert 0 < m[0, 1] < 1 and m[0, 3] == 0 and m[1, 0] != m[0, 1]  # partial, none, not symmetric


def test_overlap_of_a_shifted_wall():
    # a fronto-parallel wall at 2 m seen by 64 x 48 pixels, f = 32 (pixel pitch 6.25 cm on the wall); the second
    # camera moved sideways by 1 m = 16 pixel columns: 48 of 64 columns of the first frame are seen by both, and
    # the next column is 6.25 cm < 7.5 cm from the other frame's first one: 49 of 64 columns count
    H, W, f = 48, 64, 32.0
    depth = np.full((H, W), 2.0, dtype=np.float32)
    K = np.array([[f, 0, (W - 1) / 2], [0, f, (H - 1) / 2], [0, 0, 1]])
    moved = np.eye(4)
    moved[0, 3] = 1.0
    a = frame_points(depth, K, np.eye(4), voxel=0.05)
    b = frame_points(depth, K, moved, voxel=0.05)
    assert a.shape[0] == H * W  # 6.25 cm pitch: one pixel per 5 cm voxel
    m = overlap_matrix([a, b], radius=0.075)
    assert m[0, 1] == pytest.approx(49 / 64) and m[1, 0] == pytest.approx(49 / 64)


def test_mine_folder_and_pairs_file_on_real_7scenes_frames(tmp_path):
    ids = ("000000", "000050", "000100", "000400")
    folder = open_frame_folder(make_7scenes(tmp_path / "scan", ids))
    pairs, skipped = mine_folder(folder, "scan", min_overlap=0.0)
    assert skipped == 0 and [(p.frame_a, p.frame_b) for p in pairs] == [
        (a, b) for i, a in enumerate(ids) for b in ids[i + 1:]]
    # each overlap is the brute-force fraction of frame_a's points within 7.5 cm of frame_b's
    points = {i: frame_points(*folder.depth_and_pose(k)) for k, i in enumerate(ids)}
    for p in pairs:
        assert p.overlap == pytest.approx(brute_overlap(points[p.frame_a][::7], points[p.frame_b], 0.075), abs=0.02)
    near = {(p.frame_a, p.frame_b): p.overlap for p in pairs}
    assert near["000000", "000050"] > near["000000", "000400"]  # 2 s apart against 16 s apart in the sequence
    kept, _ = mine_folder(folder, "scan", min_overlap=0.5)
    assert kept == [p for p in pairs if p.overlap >= 0.5]
    path = write_overlaps(tmp_path / "pairs.tsv", pairs)
    assert path.read_text().splitlines()[0] == "folder\tframe_a\tframe_b\toverlap"
    assert read_overlaps(path) == [FrameOverlap(p.folder, p.frame_a, p.frame_b, round(p.overlap, 4)) for p in pairs]


def test_cli_names_scannet_frames_and_skips_bad_poses(tmp_path, capsys):
    root = tmp_path / "scans"
    make_scannet(root / "scene0000_00", ids=("000000", "000050"), upscale=False)
    make_scannet(root / "scene0001_00", ids=("000000", "000050", "000100"), upscale=False)
    (root / "scene0001_00" / "pose" / "100.txt").write_text("\n".join(["-inf -inf -inf -inf"] * 4))  # ScanNet's mark
    assert main(["overlaps", str(root), "--out", str(tmp_path / "p.tsv"), "--min-overlap", "0.2"]) == 0
    printed = capsys.readouterr()
    assert re.search(r"warning: frame skipped: .*100\.txt.*NaN/inf", printed.err)
    rows = read_overlaps(tmp_path / "p.tsv")
    assert [(r.folder, r.frame_a, r.frame_b) for r in rows] == [("scene0000_00", "0", "50"), ("scene0001_00", "0", "50")]
    assert rows[0].overlap == rows[1].overlap >= 0.2  # the same two frames in both scans
    assert "1 frames skipped" in printed.out


def test_bad_pairs_files_name_the_file_and_line(tmp_path):
    with pytest.raises(FrameError, match="not found"):
        read_overlaps(tmp_path / "none.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    with pytest.raises(FrameError, match="header"):
        read_overlaps(bad)
    bad.write_text("folder\tframe_a\tframe_b\toverlap\nscan\t0\t50\n")
    with pytest.raises(FrameError, match=r"bad\.tsv:2: expected 4"):
        read_overlaps(bad)


def test_folder_without_poses_is_an_error(tmp_path):
    scan = make_7scenes(tmp_path / "scan", ("000000",))
    for p in scan.glob("*.pose.txt"):
        p.unlink()
    with pytest.raises(FrameError, match="no pose files"):
        open_frame_folder(scan).depth_and_pose(0)
    assert Image.open(DATA / "frame-000000.depth.png").mode.startswith("I")


def test_rendered_synthetic_frames_overlap_as_computed_here(tmp_path):
    from ppkt.synthetic.dataset import write_dataset

    world = write_dataset(tmp_path / "world", scenes=2, frames_per_scene=3, seed=6, workers=1, point_spacing=0.1,
                          progress=False, compact=True)
    assert main(["overlaps", str(world / "frames"), "--out", str(tmp_path / "p.tsv"), "--min-overlap", "0"]) == 0
    rows = read_overlaps(tmp_path / "p.tsv")
    # every pair of frames within each scan, and never a pair across the two scans
    assert sorted((r.folder, r.frame_a, r.frame_b) for r in rows) == sorted(
        (s, a, b) for s in ("scene_0000", "scene_0001") for a, b in (("0", "1"), ("0", "2"), ("1", "2")))

    def world_points(scan: str, frame: str) -> np.ndarray:
        """Back-projection written out: pixel (u, v) at depth z -> K^-1 (u z, v z, z), then the pose; 5 cm voxel means."""
        root = world / "frames" / scan
        z = np.asarray(Image.open(root / "depth" / f"{frame}.png"), dtype=np.float64) / 1000.0
        K = np.loadtxt(root / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
        pose = np.loadtxt(root / "pose" / f"{frame}.txt")
        v, u = np.nonzero(z > 0)
        d = z[v, u]
        cam = np.stack([(u - K[0, 2]) * d / K[0, 0], (v - K[1, 2]) * d / K[1, 1], d], 1)
        pts = cam @ pose[:3, :3].T + pose[:3, 3]
        _, inverse = np.unique(np.floor(pts / 0.05).astype(np.int64), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        sums = np.zeros((inverse.max() + 1, 3))
        np.add.at(sums, inverse, pts)
        return sums / np.bincount(inverse)[:, None]

    def chunked_overlap(a: np.ndarray, b: np.ndarray, radius: float) -> float:
        """brute_overlap, 256 points of a at a time."""
        hits = sum(int((((a[i:i + 256, None] - b[None]) ** 2).sum(-1).min(1) <= radius ** 2).sum())
                   for i in range(0, len(a), 256))
        return hits / len(a)

    for r in rows:
        want = chunked_overlap(world_points(r.folder, r.frame_a)[::3], world_points(r.folder, r.frame_b), 0.075)
        assert r.overlap == pytest.approx(want, abs=0.03), r
    assert any(r.overlap > 0.1 for r in rows)  # the views of a room do overlap


def test_a_scan_without_any_usable_pose_is_an_error_and_each_skip_a_warning_line(tmp_path, capsys):
    scan = tmp_path / "scan"
    shutil.copytree(Path(__file__).resolve().parents[2] / "data" / "7scenes-redkitchen", scan)
    poses = sorted(scan.glob("*.pose.txt"))
    for pose in poses:
        pose.write_text("inf inf inf inf\ninf inf inf inf\ninf inf inf inf\n0 0 0 1\n")
    assert main(["overlaps", str(scan), "--out", str(tmp_path / "o.tsv")]) == 2
    err = capsys.readouterr().err
    assert err.count("warning: frame skipped: ") == len(poses) and "UserWarning" not in err
    assert f"ppkt: error: {scan}: none of its {len(poses)} frames has a usable pose and depth" in err
    assert not (tmp_path / "o.tsv").exists()
