"""The benchmark world's settings: split sizes, point spacing, compact scene files read back by the fine-tuning
reader, resume of worlds written before `compact` existed, and `ppkt synth --preset`."""
import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ppkt import cli
from ppkt.commands import synth
from ppkt.data.scenes import class_set_from_json, load_scene as load_seg_scene
from ppkt.synthetic import load_scene, make_scene, sample_surface, scene_rngs, write_dataset
from ppkt.synthetic.dataset import VAL_FRACTION, WORLD_PRESETS, val_scene_count

SPACING = 0.025  # the benchmark's: half its 5 cm fine-tuning voxels
SCENES = 6
ARGS = dict(scenes=SCENES, frames_per_scene=2, image_size=(24, 32), point_spacing=SPACING, progress=False)


@pytest.fixture(scope="module")
def compact_world(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("compact") / "world", seed=3, workers=1, compact=True, **ARGS)


def test_val_split_size_of_the_benchmark_world():
    preset = WORLD_PRESETS["benchmark"]
    assert VAL_FRACTION == 0.2
    assert preset["scenes"] >= 120 and val_scene_count(preset["scenes"]) == 24
    assert [val_scene_count(n) for n in (1, 2, 3, 6, 10, 100)] == [0, 1, 1, 1, 2, 20]


def test_compact_world_has_the_requested_splits_frames_and_files(compact_world):
    out = compact_world
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert len(val) == val_scene_count(SCENES) == 1 and len(train) == SCENES - 1
    assert sorted(train + val) == [f"scene_{i:04d}" for i in range(SCENES)]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["compact"] is True and meta["point_spacing"] == SPACING and meta["complete"]
    assert (meta["counts"]["train_scenes"], meta["counts"]["val_scenes"]) == (SCENES - 1, 1)
    assert meta["counts"]["frames"] == 2 * SCENES
    for name in train + val:
        assert len(list((out / "frames" / name / "depth").glob("*.png"))) == 2
        files = sorted(p.name for p in (out / "scenes" / name).iterdir())
        assert files == ["boxes.npy", "color.npy", "coord.npy", "segment.npy"], name


def test_scene_points_lie_at_the_requested_spacing(compact_world):
    for i in range(3):
        coord = np.load(compact_world / "scenes" / f"scene_{i:04d}" / "coord.npy").astype(np.float64)
        d = cKDTree(coord).query(coord, k=2)[0][:, 1]   # distance of each point to its nearest other point
        # per-face grid of cells <= spacing, jittered by a quarter cell: measured median 0.87, p99 1.02, max 1.11
        assert 0.75 * SPACING < np.median(d) < 0.95 * SPACING, np.median(d)
        assert np.percentile(d, 99) < 1.05 * SPACING and d.max() < 1.2 * SPACING
        assert d.min() > 0   # float16 storage merges no points


def test_the_finetuning_reader_returns_the_points_as_written(compact_world):
    classes = class_set_from_json(compact_world / "classes.json")
    for i in (0, SCENES - 1):
        folder = compact_world / "scenes" / f"scene_{i:04d}"
        stored = load_scene(folder)
        assert set(stored) == {"coord", "color", "segment", "boxes"}
        assert (stored["coord"].dtype, stored["color"].dtype, stored["segment"].dtype) == (
            np.float16, np.uint8, np.int8)
        ref = sample_surface(make_scene(3, i), SPACING, rng=scene_rngs(3, i)["points"])
        n = len(ref)
        read = load_seg_scene(folder, classes)
        assert read.coord.dtype == np.float32 and read.coord.shape == (n, 3)
        assert read.color.dtype == np.float32 and read.color.shape == (n, 3)
        assert read.segment.dtype == np.int64 and read.segment.shape == (n,)
        np.testing.assert_array_equal(read.coord, stored["coord"].astype(np.float32))
        assert np.abs(read.coord - ref.coord).max() <= 2 ** -9 + 1e-6   # float16 below 8 m: <= 1.95 mm
        np.testing.assert_array_equal(read.color, ref.color.astype(np.float32))
        np.testing.assert_array_equal(read.segment, ref.segment.astype(np.int64))
        np.testing.assert_array_equal(stored["boxes"], make_scene(3, i).boxes.astype(np.float32))


def test_full_scene_files_unchanged_and_read_alike(tmp_path):
    out = write_dataset(tmp_path / "full", seed=3, workers=1, **{**ARGS, "scenes": 1, "point_spacing": 0.1})
    folder = out / "scenes" / "scene_0000"
    stored = load_scene(folder)
    assert {k: v.dtype for k, v in stored.items()} == dict(coord=np.float32, color=np.uint8, normal=np.float32,
                                                           segment=np.int16, instance=np.int32, boxes=np.float32)
    read = load_seg_scene(folder, class_set_from_json(out / "classes.json"))
    np.testing.assert_array_equal(read.coord, stored["coord"])
    np.testing.assert_array_equal(read.segment, stored["segment"])


def test_a_world_written_before_compact_existed_resumes(tmp_path):
    args = {**ARGS, "scenes": 2, "point_spacing": 0.1}
    out = write_dataset(tmp_path / "w", seed=1, workers=1, **args)
    meta = json.loads((out / "dataset.json").read_text())
    del meta["compact"]   # as written before the option
    (out / "dataset.json").write_text(json.dumps(meta))
    write_dataset(out, seed=1, workers=1, **args)
    with pytest.raises(FileExistsError, match="compact"):
        write_dataset(out, seed=1, workers=1, compact=True, **args)


def _synth_args(*argv):
    args = cli.build_parser().parse_args(["synth", "--out", "x", *argv])
    synth.apply_preset(args)
    return args


def test_synth_preset_sets_the_options_not_given():
    assert synth.PRESETS == WORLD_PRESETS   # the CLI's copy (no numpy import for --help)
    a = _synth_args("--preset", "benchmark")
    assert (a.scenes, a.frames_per_scene, a.point_spacing, a.compact) == (120, 8, 0.025, True)
    b = _synth_args("--scenes", "40", "--preset", "benchmark", "--no-compact", "--point-spacing", "0.02")
    assert (b.scenes, b.frames_per_scene, b.point_spacing, b.compact) == (40, 8, 0.02, False)
    c = _synth_args("--frames-per-scene", "3")
    assert (c.scenes, c.frames_per_scene, c.point_spacing, c.compact) == (40, 3, 0.02, False)
