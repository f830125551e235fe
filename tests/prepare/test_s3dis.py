"""`ppkt prepare s3dis` on tiny S3DIS-style rooms written by the test: labels, clutter mapping, normals, splits."""
import numpy as np

from ppkt.cli import main as cli_main
from ppkt.data.scenes import S3DIS13, SegScenes, list_scenes
from ppkt.prepare.s3dis import convert_room


def grid(a, b, step=0.05):
    u, v = np.meshgrid(np.arange(0, a, step), np.arange(0, b, step), indexing="ij")
    return u.reshape(-1), v.reshape(-1)


def write_room(root, area, room, corrupt=False):
    ann = root / area / room / "Annotations"
    ann.mkdir(parents=True)
    y, z = grid(3.0, 2.5)
    wall = np.stack([np.zeros_like(y), y, z], 1)  # the plane x = 0; the room lies at x > 0
    x, y2 = grid(2.0, 3.0)
    floor = np.stack([x, y2, np.zeros_like(x)], 1)
    chair = np.random.default_rng(0).uniform([0.8, 1.0, 0.0], [1.2, 1.4, 0.9], (200, 3))
    stairs = np.random.default_rng(1).uniform([1.5, 2.0, 0.0], [1.9, 2.8, 0.6], (100, 3))
    for name, pts, rgb in (("wall_1", wall, (10, 20, 30)), ("floor_1", floor, (40, 50, 60)),
                           ("chair_2", chair, (70, 80, 90)), ("stairs_1", stairs, (1, 2, 3))):
        lines = [f"{p[0]:.3f} {p[1]:.3f} {p[2]:.3f} {rgb[0]} {rgb[1]} {rgb[2]}" for p in pts]
        if corrupt and name == "wall_1":
            lines.insert(5, "1.000 2.000 1.5\x10 10 20 30")  # the kind of damaged line the release has
        (ann / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return root / area / room, {"wall_1": len(wall), "floor_1": len(floor), "chair_2": 200, "stairs_1": 100}


def test_room_converts_to_the_expected_labels_and_normals(tmp_path):
    room, counts = write_room(tmp_path / "s3dis", "Area_1", "office_1", corrupt=True)
    info = convert_room(room, tmp_path / "out")
    assert info["corrupt_lines_skipped"] == 1 and info["mapped_to_clutter"] == ["stairs"] and info["normals"] == "estimated"
    out = tmp_path / "out" / "Area_1" / "office_1"
    seg, inst = np.load(out / "segment.npy"), np.load(out / "instance.npy")
    # files sorted: chair_2, floor_1, stairs_1, wall_1; S3DIS-13 ids: chair 8, floor 1, clutter 12, wall 2
    expected = [8] * 200 + [1] * counts["floor_1"] + [12] * 100 + [2] * counts["wall_1"]
    assert seg.tolist() == expected
    assert [S3DIS13.names[i] for i in (8, 1, 12, 2)] == ["chair", "floor", "clutter", "wall"]
    assert inst.tolist() == [0] * 200 + [1] * counts["floor_1"] + [2] * 100 + [3] * counts["wall_1"]
    coord, color, normal = np.load(out / "coord.npy"), np.load(out / "color.npy"), np.load(out / "normal.npy")
    assert coord.shape == (len(seg), 3) and color.dtype == np.uint8 and np.array_equal(color[-1], [10, 20, 30])
    # normals of the planes point into the room: the wall x = 0 along +x, the floor z = 0 along +z
    wall_n = normal[seg == 2]
    interior = (coord[seg == 2][:, 1] > 0.2) & (coord[seg == 2][:, 1] < 2.8) & (coord[seg == 2][:, 2] > 0.2)
    assert np.allclose(wall_n[interior], [1.0, 0.0, 0.0], atol=1e-3)
    floor_xy = coord[seg == 1]
    far = (floor_xy[:, 0] > 0.3) & (floor_xy[:, 0] < 1.7) & (floor_xy[:, 1] > 0.3) & (floor_xy[:, 1] < 2.7)
    far &= ~((floor_xy[:, 0] > 0.6) & (floor_xy[:, 0] < 1.4) & (floor_xy[:, 1] > 0.8) & (floor_xy[:, 1] < 1.6))  # chair feet
    far &= ~((floor_xy[:, 0] > 1.3) & (floor_xy[:, 1] > 1.8))  # stairs
    assert np.allclose(normal[seg == 1][far], [0.0, 0.0, 1.0], atol=1e-3)


def test_cli_converts_areas_that_finetuning_splits_by_area(tmp_path, capsys):
    root = tmp_path / "Stanford3dDataset_v1.2_Aligned_Version"
    write_room(root, "Area_1", "office_1")
    write_room(root, "Area_5", "office_2")
    out = tmp_path / "s3dis"
    assert cli_main(["prepare", "s3dis", "--root", str(root), "--out", str(out), "--workers", "2"]) == 0
    text = capsys.readouterr()
    assert "2 rooms: 2 converted, 0 already done, 0 failed" in text.out  # the summary on stdout,
    assert "stairs counted as clutter" in text.err and "prepare rooms 2/2" in text.err  # notes, progress on stderr
    assert [p.name for p in list_scenes(out, "train")] == ["office_1"]
    assert [p.name for p in list_scenes(out, "val")] == ["office_2"]
    sample = SegScenes(list_scenes(out, "val"), "s3dis13", voxel_size=0.1, train=False)[0]
    assert set(sample.labels.tolist()) == {1, 2, 8, 12}
    assert cli_main(["prepare", "s3dis", "--root", str(root), "--out", str(out)]) == 0
    assert "0 converted, 2 already done" in capsys.readouterr().out
