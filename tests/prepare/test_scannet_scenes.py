"""`ppkt prepare scannet-scenes` on a tiny ScanNet-style scan written by the test: labels, instances, boxes, splits."""
import json

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from ppkt.cli import main as cli_main
from ppkt.data.scenes import SCANNET20, SceneError, SegScenes, list_scenes
from ppkt.prepare.scannet_scenes import DETECTION_CLASSES, convert_scan

# the axis alignment of the scan: 90 degrees about z, then a shift of (1, 2, 0)
ALIGN = np.array([[0.0, -1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def cube(lo, hi):
    """8 corners and 12 outward (counter-clockwise) triangles of an axis-aligned box."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    v = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                  [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]], dtype=np.float32)
    f = [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
         [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]
    return v, np.array(f)


# (vertices, faces, NYU40 label, segment ids of the lower and upper 4 corners (floor: all 4), object id or None)
FLOOR = (np.array([[0, 0, 0], [4, 0, 0], [4, 3, 0], [0, 3, 0]], np.float32), np.array([[0, 1, 2], [0, 2, 3]]), 2, (10, 10), None)
CHAIR = (*cube((1.0, 1.0, 0.0), (1.5, 1.5, 0.5)), 5, (20, 21), 0)  # one object made of two segments
TABLE = (*cube((2.0, 0.5, 0.0), (3.0, 1.5, 0.8)), 7, (30, 30), 1)
PROP = (*cube((3.5, 2.5, 0.0), (3.7, 2.7, 0.2)), 40, (40, 40), 2)  # otherprop: ignored class, no detection box


def write_scan(root, scan="scene0007_00", labels=True, label_count=None):
    d = root / scan
    d.mkdir(parents=True)
    verts, faces, nyu, segs, groups = [], [], [], [], {}
    for v, f, label, (s_lo, s_hi), obj in (FLOOR, CHAIR, TABLE, PROP):
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        nyu += [label] * len(v)
        seg = [s_lo] * len(v) if len(v) == 4 else [s_lo] * 4 + [s_hi] * 4
        segs += seg
        if obj is not None:
            groups[obj] = sorted(set(seg))
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    vert = np.zeros(len(v), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    vert["x"], vert["y"], vert["z"] = v.T
    vert["red"], vert["green"], vert["blue"], vert["alpha"] = 200, 100, 50, 255
    face = np.zeros(len(f), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = f
    PlyData([PlyElement.describe(vert, "vertex"), PlyElement.describe(face, "face")]).write(str(d / f"{scan}_vh_clean_2.ply"))
    if labels:
        n = label_count or len(v)
        lab = np.zeros(n, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("label", "u2")])
        lab["label"] = (nyu * 2)[:n]
        PlyData([PlyElement.describe(lab, "vertex")]).write(str(d / f"{scan}_vh_clean_2.labels.ply"))
        (d / f"{scan}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"sceneId": scan, "segIndices": segs}))
        agg = [{"id": o, "objectId": o, "label": "x", "segments": s} for o, s in groups.items()]
        (d / f"{scan}.aggregation.json").write_text(json.dumps({"sceneId": scan, "segGroups": agg}))
    (d / f"{scan}.txt").write_text("colorHeight = 968\naxisAlignment = " + " ".join(f"{x:g}" for x in ALIGN.reshape(-1)) + "\n")
    return d


def test_scan_converts_to_the_expected_labels_instances_and_boxes(tmp_path):
    info = convert_scan(write_scan(tmp_path / "scans"), tmp_path / "out")
    assert info["points"] == 28 and info["boxes"] == 2 and info["axis_aligned"] and not info["skipped"]
    s = tmp_path / "out" / "scenes" / "scene0007_00"
    seg, inst = np.load(s / "segment20.npy"), np.load(s / "instance.npy")
    # NYU40 -> ScanNet-20: floor 2 -> 1, chair 5 -> 4, table 7 -> 6, otherprop 40 -> ignore
    assert seg.tolist() == [1] * 4 + [4] * 8 + [6] * 8 + [-1] * 8
    assert SCANNET20.names[1] == "floor" and SCANNET20.names[4] == "chair" and SCANNET20.names[6] == "table"
    assert inst.tolist() == [-1] * 4 + [0] * 8 + [1] * 8 + [2] * 8
    coord = np.load(s / "coord.npy")
    # aligned: x' = -y + 1, y' = x + 2; the floor corner (4, 3, 0) goes to (-2, 6, 0)
    assert np.allclose(coord[2], [-2.0, 6.0, 0.0]) and coord.dtype == np.float32
    assert np.array_equal(np.load(s / "color.npy")[0], [200, 100, 50])
    assert np.allclose(np.load(s / "normal.npy")[:4], [0.0, 0.0, 1.0])  # the floor faces up
    boxes = np.load(s / "boxes.npy")
    # chair x [1, 1.5], y [1, 1.5] -> x' [-0.5, 0], y' [3, 3.5]; table x [2, 3], y [0.5, 1.5] -> x' [-0.5, 0.5], y' [4, 5]
    chair = [-0.25, 3.25, 0.25, 0.5, 0.5, 0.5, 0.0, DETECTION_CLASSES.index("chair")]
    table = [0.0, 4.5, 0.4, 1.0, 1.0, 0.8, 0.0, DETECTION_CLASSES.index("table")]
    assert DETECTION_CLASSES.index("chair") == 2 and DETECTION_CLASSES.index("table") == 4
    assert np.allclose(boxes, [chair, table], atol=1e-6)
    assert np.allclose(np.load(s / "axis_align.npy"), ALIGN)


def test_cli_writes_splits_that_finetuning_reads_and_reports_bad_scans(tmp_path, capsys):
    scans = tmp_path / "scans"
    write_scan(scans, "scene0007_00")
    write_scan(scans, "scene0008_00")
    write_scan(scans, "scene0707_00", labels=False)  # a test scan: no labels
    (tmp_path / "train.txt").write_text("scene0007_00\nscene0008_00\n")
    (tmp_path / "test.txt").write_text("scene0707_00\n")
    out = tmp_path / "out"
    args = ["prepare", "scannet-scenes", "--scans", str(scans), "--out", str(out), "--workers", "2",
            "--split", f"train={tmp_path / 'train.txt'}", "--split", f"test={tmp_path / 'test.txt'}"]
    assert cli_main(args) == 0
    assert "3 scans: 3 converted, 0 already done, 0 failed" in capsys.readouterr().out
    assert np.all(np.load(out / "scenes" / "scene0707_00" / "segment20.npy") == -1)
    train = list_scenes(out, "train")
    assert [p.name for p in train] == ["scene0007_00", "scene0008_00"]
    sample = SegScenes(train, "scannet20", voxel_size=0.05, train=False)[0]
    assert set(sample.labels.tolist()) == {1, 4, 6, -1}
    assert cli_main(args) == 0 and "0 converted, 3 already done" in capsys.readouterr().out
    write_scan(tmp_path / "bad", "scene0009_00", label_count=10)
    with pytest.raises(SceneError, match=r"scene0009_00_vh_clean_2\.labels\.ply: 10 vertices, but .*scene0009_00_vh_clean_2\.ply has 28"):
        convert_scan(tmp_path / "bad" / "scene0009_00", out)
    assert cli_main(["prepare", "scannet-scenes", "--scans", str(tmp_path / "bad"), "--out", str(out)]) == 1
    assert "failed: " in capsys.readouterr().out and not (out / "scenes" / "scene0009_00").exists()
