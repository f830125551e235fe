"""Segmentation scenes: voxel labels/features, label-preserving augmentation, crops, limited labels, layouts."""
import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.data.scene_augment import SceneAugment, augment_colors, crop_nearest
from ppkt.geometry.voxelize import voxelize
from ppkt.data.scenes import (PRECROP_MARGIN, S3DIS13, grid_sample, SCANNET20, ClassSet, SceneError, SegScenes, class_set_from_json, collate_scenes,
                              get_class_set, limit_points, list_scenes, load_scene, select_scenes)

TOY = ClassSet("toy", tuple(f"c{i}" for i in range(8)), "segment")


def write_scene(folder: Path, coord, color, segment, key="segment", normal=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    coord = np.asarray(coord, dtype=np.float32)
    np.save(folder / "coord.npy", coord)
    np.save(folder / "color.npy", np.asarray(color, dtype=np.uint8))
    np.save(folder / f"{key}.npy", np.asarray(segment, dtype=np.int16))
    if normal:
        np.save(folder / "normal.npy", np.tile(np.float32([0, 0, 1]), (len(coord), 1)))
    return folder


def cube_scene(folder: Path, n=8000, seed=0) -> Path:
    """n random points in [-1, 1]^3 metres; label = octant 4*(z>0) + 2*(y>0) + (x>0)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-1, 1, (n, 3))
    label = 4 * (p[:, 2] > 0) + 2 * (p[:, 1] > 0) + (p[:, 0] > 0)
    return write_scene(folder, p, rng.integers(0, 256, (n, 3)), label)


# ------------------------------------------------------------------------------------------ voxels
def test_voxel_feature_is_mean_colour_and_label_is_majority(tmp_path):
    pts = [[0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.9, 0.2, 0.3],  # voxel (0,0,0): labels 2, 2, 1
           [2.5, 0.5, 0.5], [2.6, 0.4, 0.5],  # voxel (2,0,0): ignore + 3 -> 3
           [0.5, 1.5, 1.5],  # voxel (0,1,1): only ignore -> -1
           [1.2, 1.2, 0.2], [1.8, 1.8, 0.8]]  # voxel (1,1,0): tie 4 vs 1 -> 1
    col = [[0, 0, 0], [255, 255, 255], [30, 60, 90], [255, 0, 0], [0, 0, 255], [10, 20, 30], [0, 0, 0], [100, 100, 100]]
    seg = [2, 2, 1, -1, 3, -1, 4, 1]
    folder = write_scene(tmp_path / "s", pts, col, seg)
    expect = {(0, 0, 0): ([95, 105, 115], 2), (2, 0, 0): ([127.5, 0, 127.5], 3), (0, 1, 1): ([10, 20, 30], -1),
              (1, 1, 0): ([50, 50, 50], 1)}
    for train in (False, True):  # train without augmentation and crop: the same voxels
        s = SegScenes([folder], TOY, voxel_size=1.0, train=train, augment=False)[(0, 7)]
        assert s.coords.dtype == torch.int32 and s.feats.dtype == torch.float32 and s.labels.dtype == torch.int64
        got = {tuple(c): (f, l) for c, f, l in zip(s.coords.tolist(), s.feats, s.labels.tolist())}
        assert set(got) == set(expect)
        for c, (rgb, label) in expect.items():
            torch.testing.assert_close(got[c][0], torch.tensor(rgb) / 255.0 - 0.5)
            assert got[c][1] == label
        assert s.name == "s"
        if not train:  # every original point -> the voxel containing it (training samples hold grid-sampled points)
            assert [tuple(s.coords[v].tolist()) for v in s.point_to_voxel] == [tuple(int(x) for x in p) for p in pts]
            assert s.point_labels.tolist() == seg


def test_training_clouds_are_grid_sampled_at_half_the_voxel_size():
    coord = torch.tensor([[0.1, 0.1, 0.1], [0.4, 0.2, 0.3], [0.2, 0.3, 0.1],  # cell (0,0,0): labels 2, 1, 1
                          [0.7, 0.1, 0.1],  # cell (1,0,0): unlabelled
                          [0.6, 0.6, 0.6], [0.9, 0.9, 0.9]])  # cell (1,1,1): labels 3, -1
    color = torch.tensor([[30.0, 0, 0], [60, 0, 0], [90, 0, 0], [0, 50, 0], [0, 0, 10], [0, 0, 20]])
    labels = torch.tensor([2, 1, 1, -1, 3, -1])
    c, col, lab = grid_sample(coord, color, labels, 0.5, num_classes=4)
    torch.testing.assert_close(c, torch.tensor([[0.7 / 3, 0.2, 0.5 / 3], [0.7, 0.1, 0.1], [0.75, 0.75, 0.75]]))
    torch.testing.assert_close(col, torch.tensor([[60.0, 0, 0], [0, 50, 0], [0, 0, 15]]))
    assert lab.tolist() == [1, -1, 3]


def test_grid_sampled_training_keeps_the_voxels_of_the_full_cloud(tmp_path):
    """A dense random cube: without augmentation the training voxels, colours and labels are those of evaluation."""
    folder = cube_scene(tmp_path / "cube", n=60000)  # 0.4 m voxels, 0.2 m cells: octant borders are cell borders
    full = SegScenes([folder], TOY, voxel_size=0.4, train=False)[(0, 1)]
    sampled = SegScenes([folder], TOY, voxel_size=0.4, train=True, augment=False)[(0, 1)]
    assert sampled.point_to_voxel.numel() == 1000  # 10^3 cells instead of 60000 points
    assert torch.equal(sampled.coords, full.coords) and torch.equal(sampled.labels, full.labels)
    torch.testing.assert_close(sampled.feats, full.feats, atol=0.02, rtol=0)  # mean of cell means vs of points


def test_point_to_voxel_is_the_containing_voxel_in_eval(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.uniform(-2, 3, (3000, 3)).astype(np.float32)
    folder = write_scene(tmp_path / "r", p, rng.integers(0, 256, (3000, 3)), rng.integers(-1, 8, 3000))
    ds = SegScenes([folder], TOY, voxel_size=0.25, train=False, max_voxels=10)
    a, b = ds[(0, 1)], ds[(0, 2)]
    assert torch.equal(a.coords, b.coords) and torch.equal(a.feats, b.feats)  # deterministic, no crop in eval
    grid = np.floor(p.astype(np.float64) / 0.25).astype(np.int64)
    assert np.array_equal(a.coords[a.point_to_voxel].numpy(), grid - grid.min(0))
    assert len(np.unique(grid, axis=0)) == a.coords.shape[0]


# ------------------------------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_augmentation_keeps_labels_on_their_points(tmp_path, seed):
    folder = cube_scene(tmp_path / "cube")
    vs = 0.05
    s = SegScenes([folder], TOY, voxel_size=vs, augment=SceneAugment.geometric_only())[(0, seed)]
    assert (s.coords >= 0).all()
    # Recover the transform: affine fit from octant centroids (original +-0.5) to voxel-space centroids.
    c = s.coords.double() + 0.5
    octant = torch.tensor([[(k & 1) - 0.5, (k >> 1 & 1) - 0.5, (k >> 2 & 1) - 0.5] for k in range(8)], dtype=torch.float64)
    cent = torch.stack([c[s.labels == k].mean(0) for k in range(8)])
    X = torch.linalg.lstsq(torch.cat([octant, torch.ones(8, 1, dtype=torch.float64)], 1), cent).solution
    A, t = X[:3].T * vs, X[3]  # metres per metre: scale * rotation * flips
    gram = A.T @ A
    scale = gram.diagonal().mean().sqrt()
    assert 0.88 < scale < 1.12
    torch.testing.assert_close(gram / scale**2, torch.eye(3, dtype=torch.float64), atol=0.03, rtol=0)
    assert A[2, 2] > 0.85 and A[2, :2].abs().max() < 0.05  # z stays up: rotation about z only
    # Every voxel away from the octant planes carries the octant its centre comes from.
    orig = (c - t) @ torch.linalg.inv(A / vs).T
    far = (orig.abs() > 0.1).all(1)
    assert far.sum() > 0.5 * len(c)
    pred = 4 * (orig[:, 2] > 0).long() + 2 * (orig[:, 1] > 0).long() + (orig[:, 0] > 0).long()
    assert torch.equal(pred[far], s.labels[far])


def test_full_augmentation_and_crop_keep_the_pairing(tmp_path):
    folder = cube_scene(tmp_path / "cube")
    ds = SegScenes([folder], TOY, voxel_size=0.05, max_voxels=1500)
    a = ds[(0, 11)]
    assert torch.equal(a.coords, ds[(0, 11)].coords) and torch.equal(a.feats, ds[(0, 11)].feats)  # seeded
    b = ds[(0, 12)]
    assert a.coords.shape != b.coords.shape or not torch.equal(a.coords, b.coords)
    for s in (a, b):
        assert s.coords.shape[0] <= 1500 and (s.coords >= 0).all() and (s.coords.min(0).values == 0).all()
        assert s.feats.min() >= -0.5 and s.feats.max() <= 0.5
        assert len(set(map(tuple, s.coords.tolist()))) == s.coords.shape[0]
        # each voxel's label is the majority of the original points mapped to it
        kept = s.point_to_voxel >= 0
        assert s.point_to_voxel.max() == s.coords.shape[0] - 1
        for v in torch.unique(s.point_to_voxel[kept])[::37].tolist():
            counts = torch.bincount(s.point_labels[s.point_to_voxel == v], minlength=8)
            assert s.labels[v] == counts.argmax()


def test_precrop_gives_the_crop_of_the_whole_scene(tmp_path):
    # without augmentation the pre-crop (only the points nearest the centre are voxelised) must keep exactly the
    # voxels that cropping the whole voxelised scene around the same centre keeps
    folder = cube_scene(tmp_path / "cube")
    ds = SegScenes([folder], TOY, voxel_size=0.05, augment=False, max_voxels=300)
    points = ds._points(0)[0]
    assert points.shape[0] > PRECROP_MARGIN * 300 * ds._points_per_voxel[0]  # the pre-crop is taken
    vox = voxelize(points, 0.05)
    for seed in range(4):
        s = ds[(0, seed)]
        first = int(torch.randint(0, points.shape[0], (), generator=torch.Generator().manual_seed(seed)))
        keep, _ = crop_nearest(vox.coords, 300, centre_index=int(vox.point_to_voxel[first]))
        want = vox.coords[keep] - vox.coords[keep].min(0).values
        assert set(map(tuple, s.coords.tolist())) == set(map(tuple, want.tolist()))


def test_chromatic_jitter_stays_in_range():
    g = torch.Generator().manual_seed(0)
    color = torch.tensor([[0.0, 0.0, 0.0], [255.0, 255.0, 255.0], [3.0, 128.0, 250.0]]).repeat(100, 1)
    strong = SceneAugment(auto_contrast=1.0, color_shift=(1.0, 0.3), color_jitter=(1.0, 0.3))
    changed = False
    for _ in range(20):
        out = augment_colors(color, strong, g)
        assert out.min() >= 0 and out.max() <= 255 and out.shape == color.shape
        changed |= not torch.equal(out, color)
    assert changed


# ------------------------------------------------------------------------------------------ crop
def test_crop_keeps_the_voxels_nearest_a_seed_and_is_connected():
    g = torch.arange(20)
    coords = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3).int()
    coords = coords[torch.randperm(len(coords), generator=torch.Generator().manual_seed(0))]
    for seed in range(3):
        keep, centre = crop_nearest(coords, 500, torch.Generator().manual_seed(seed))
        assert keep.numel() == 500 and len(set(keep.tolist())) == 500
        d2 = ((coords - centre) ** 2).sum(1)
        dropped = torch.ones(len(coords), dtype=torch.bool)
        dropped[keep] = False
        assert d2[keep].max() <= d2[dropped].min()
        assert d2[keep].min() == 0  # the seed voxel itself
        kept = set(map(tuple, coords[keep].tolist()))
        start = next(iter(kept))
        seen, todo = {start}, deque([start])
        while todo:  # 26-connected flood fill inside the kept set
            x, y, z = todo.popleft()
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for dz in (-1, 0, 1):
                        n = (x + dx, y + dy, z + dz)
                        if n in kept and n not in seen:
                            seen.add(n)
                            todo.append(n)
        assert seen == kept
    keep, _ = crop_nearest(coords[:100], 500, torch.Generator().manual_seed(0))
    assert torch.equal(keep, torch.arange(100))


# ------------------------------------------------------------------------------------------ limited labels
def test_select_scenes_is_seeded_stable_and_nested():
    scenes = [f"scene{i:04d}" for i in range(40)]
    for fraction, count in [(0.01, 1), (0.05, 2), (0.15, 6), (0.5, 20), (1.0, 40)]:
        picked = select_scenes(scenes, fraction, seed=3)
        assert len(picked) == count == max(1, round(fraction * 40))
        assert picked == sorted(picked, key=scenes.index)  # input order kept
        assert picked == select_scenes(scenes, fraction, seed=3)
    assert select_scenes(scenes, 0.25, 1) != select_scenes(scenes, 0.25, 2)
    assert set(select_scenes(scenes, 0.1, 5)) <= set(select_scenes(scenes, 0.3, 5))
    with pytest.raises(ValueError):
        select_scenes(scenes, 0.0, 0)


def test_limit_points_keeps_exactly_n_and_is_fixed():
    seg = np.random.default_rng(0).integers(-1, 5, 1000).astype(np.int16)
    out = limit_points(seg, 50, seed=9)
    assert out.dtype == seg.dtype and (out >= 0).sum() == 50
    assert np.array_equal(out[out >= 0], seg[out >= 0])  # kept points keep their labels
    assert np.array_equal(out, limit_points(seg, 50, seed=9))
    assert not np.array_equal(out, limit_points(seg, 50, seed=10))
    assert np.array_equal(limit_points(seg, 5000, 0), seg)  # fewer labelled points than asked: all stay
    t = limit_points(torch.from_numpy(seg.astype(np.int64)), 20, 1)
    assert isinstance(t, torch.Tensor) and int((t >= 0).sum()) == 20


def test_dataset_limited_points_are_the_same_every_epoch(tmp_path):
    folder = cube_scene(tmp_path / "cube", n=1000)
    ds = SegScenes([folder], TOY, voxel_size=0.05, limited_points=30, seed=4)
    a, b = ds[(0, 1)], ds[(0, 2)]
    assert int((a.point_labels >= 0).sum()) == 30 and torch.equal(a.point_labels, b.point_labels)
    assert int((a.labels >= 0).sum()) <= 30


# ------------------------------------------------------------------------------------------ layouts and errors
def _tiny(folder, key="segment"):
    return write_scene(folder, [[0, 0, 0], [1, 1, 1]], [[1, 2, 3], [4, 5, 6]], [0, 1], key=key, normal=False)


def test_list_scenes_splits_file_layout(tmp_path):
    for name in ("scene_0000", "scene_0001", "scene_0002"):
        _tiny(tmp_path / "scenes" / name)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("scene_0002\nscene_0000\n\n")
    (tmp_path / "splits" / "val.txt").write_text("scene_0001\n")
    assert list_scenes(tmp_path, "train") == [tmp_path / "scenes" / "scene_0002", tmp_path / "scenes" / "scene_0000"]
    assert list_scenes(tmp_path, "val") == [tmp_path / "scenes" / "scene_0001"]
    (tmp_path / "splits" / "test.txt").write_text("scene_0009\n")
    with pytest.raises(SceneError, match="scene_0009"):
        list_scenes(tmp_path, "test")


def test_list_scenes_train_val_folders(tmp_path):
    for split, names in (("train", ["scene0001_00", "scene0000_00"]), ("val", ["scene0300_00"])):
        for n in names:
            _tiny(tmp_path / split / n, key="segment20")
    assert [p.name for p in list_scenes(tmp_path, "train")] == ["scene0000_00", "scene0001_00"]
    assert [p.name for p in list_scenes(tmp_path, "val")] == ["scene0300_00"]
    ds = SegScenes(list_scenes(tmp_path, "val"), "scannet20", train=False)
    assert ds[(0, 0)].labels.tolist() == [0, 1]
    with pytest.raises(SceneError) as err:
        list_scenes(tmp_path, "test")
    assert "splits/test.txt" in str(err.value) and "Area_N" in str(err.value)


@pytest.mark.parametrize("nested", [True, False])
def test_list_scenes_s3dis_areas(tmp_path, nested):
    rooms = [(1, "office_1"), (2, "hallway_3"), (5, "office_2"), (5, "conferenceRoom_1")]
    for area, room in rooms:
        _tiny(tmp_path / f"Area_{area}" / room if nested else tmp_path / f"Area_{area}_{room}")
    val = list_scenes(tmp_path, "val")
    train = list_scenes(tmp_path, "train")
    assert len(val) == 2 and all("Area_5" in str(p) for p in val)
    assert len(train) == 2 and not any("Area_5" in str(p) for p in train)
    assert len(list_scenes(tmp_path, "train", val_area=1)) == 3


def test_clear_errors_for_bad_scene_folders(tmp_path):
    good = _tiny(tmp_path / "good")
    no_coord = _tiny(tmp_path / "no_coord")
    (no_coord / "coord.npy").unlink()
    no_label = _tiny(tmp_path / "no_label")
    (no_label / "segment.npy").unlink()
    short = _tiny(tmp_path / "short")
    np.save(short / "color.npy", np.zeros((3, 3), np.uint8))
    bad_id = _tiny(tmp_path / "bad_id")
    np.save(bad_id / "segment.npy", np.array([0, 99]))
    SegScenes([good], TOY)
    with pytest.raises(SceneError, match=r"no_coord/coord\.npy"):
        SegScenes([good, no_coord], TOY)
    with pytest.raises(SceneError, match=r"no_label/segment\.npy"):
        SegScenes([no_label], TOY)
    with pytest.raises(SceneError, match=r"short/color\.npy has 3 rows"):
        SegScenes([short], TOY)
    with pytest.raises(SceneError, match=r"bad_id/segment\.npy holds class id 99"):
        load_scene(bad_id, TOY)
    with pytest.raises(SceneError, match=r"segment20\.npy"):
        SegScenes([good], SCANNET20)


def test_only_coord_color_and_labels_are_read(tmp_path):
    """normal.npy (and any other file) is not an input: an unreadable or mis-shaped one changes nothing."""
    good = write_scene(tmp_path / "good", [[0, 0, 0], [1, 1, 1]], [[1, 2, 3], [4, 5, 6]], [0, 1])
    odd = write_scene(tmp_path / "odd", [[0, 0, 0], [1, 1, 1]], [[1, 2, 3], [4, 5, 6]], [0, 1], normal=False)
    (odd / "normal.npy").write_bytes(b"not a numpy file")
    np.save(odd / "instance.npy", np.zeros(5))
    arrays = load_scene(odd, TOY)
    assert sorted(vars(arrays)) == ["color", "coord", "segment"]
    a, b = SegScenes([good], TOY, train=False)[0], SegScenes([odd], TOY, train=False)[0]
    assert torch.equal(a.feats, b.feats) and torch.equal(a.coords, b.coords) and torch.equal(a.labels, b.labels)


# ------------------------------------------------------------------------------------------ class sets, batching
def test_class_sets(tmp_path):
    assert SCANNET20.num_classes == 20 and SCANNET20.segment_key == "segment20"
    assert SCANNET20.names[:3] == ("wall", "floor", "cabinet") and SCANNET20.names[-1] == "otherfurniture"
    assert SCANNET20.names[15] == "shower curtain"
    assert S3DIS13.num_classes == 13 and S3DIS13.names[0] == "ceiling" and S3DIS13.names[-1] == "clutter"
    assert get_class_set("ScanNet") is SCANNET20 and get_class_set("s3dis") is S3DIS13
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["floor", "wall", "table"], "ignore_index": 255}))
    cs = class_set_from_json(tmp_path / "classes.json")
    assert cs.names == ("floor", "wall", "table") and cs.segment_key == "segment"
    assert get_class_set(tmp_path) == cs
    assert cs.map_labels(np.array([0, 2, 255, -1])).tolist() == [0, 2, -1, -1]
    with pytest.raises(SceneError, match="scannet20"):
        get_class_set("nyu40")


def test_collate_scenes(tmp_path):
    a = write_scene(tmp_path / "a", np.random.default_rng(0).uniform(0, 1, (200, 3)), np.full((200, 3), 9), np.zeros(200))
    b = _tiny(tmp_path / "b")
    ds = SegScenes([a, b], TOY, voxel_size=0.1, train=False)
    s0, s1 = ds[(0, 0)], ds[(1, 0)]
    batch = collate_scenes([s0, s1]).to("cpu")
    m0, m1 = s0.coords.shape[0], s1.coords.shape[0]
    assert batch.batch_size == 2 and batch.offsets.tolist() == [0, m0, m0 + m1]
    assert batch.coords.shape == (m0 + m1, 4) and batch.coords.dtype == torch.int32
    assert batch.coords[:m0, 0].eq(0).all() and batch.coords[m0:, 0].eq(1).all()
    assert torch.equal(batch.coords[m0:, 1:], s1.coords) and torch.equal(batch.labels[:m0], s0.labels)
    assert batch.names == ["a", "b"] and torch.equal(batch.point_to_voxel[1], s1.point_to_voxel)
    assert batch.feats.shape == (m0 + m1, 3)
