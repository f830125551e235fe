"""Synthetic dataset on disk: layout, read-back through the frame reader, determinism, workers, resume."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppkt.data.frames import open_frame_folder
from ppkt.synthetic import (CLASS_NAMES, load_scene, make_scene, render_scene, sample_surface, scene_rngs,
                            write_dataset)

HW = (48, 64)
ARGS = dict(scenes=3, frames_per_scene=2, image_size=HW, point_spacing=0.05, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth") / "clean", seed=7, depth_noise=False, **ARGS)


def test_layout_and_metadata(clean_dataset):
    out = clean_dataset
    names = [f"scene_{i:04d}" for i in range(3)]
    assert sorted(p.name for p in (out / "frames").iterdir()) == names
    assert sorted(p.name for p in (out / "scenes").iterdir()) == names
    assert not (out / ".tmp").exists()
    for sub in ("color", "depth", "label", "instance", "pose"):
        assert len(list((out / "frames" / names[0] / sub).iterdir())) == 2
    classes = json.loads((out / "classes.json").read_text())
    assert classes["names"] == list(CLASS_NAMES) and classes["ids"] == list(range(len(CLASS_NAMES)))
    assert len(classes["colors"]) == len(CLASS_NAMES) and classes["ignore_index"] == -1
    assert classes["ignore_label"] == 255
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert sorted(train + val) == names and len(val) == 1 and not set(train) & set(val)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["seed"] == 7 and meta["scenes"] == 3 and meta["frames_per_scene"] == 2
    assert meta["image_size"] == list(HW) and meta["version"] == 1 and meta["complete"]
    assert meta["counts"]["frames"] == 6
    assert meta["counts"]["points"] == sum(len(np.load(out / "scenes" / n / "coord.npy")) for n in names)


def test_frames_read_back_through_the_scannet_reader(clean_dataset):
    folder = clean_dataset / "frames" / "scene_0001"
    frames = open_frame_folder(folder, layout="scannet")
    expected = render_scene(make_scene(7, 1), 2, scene_rngs(7, 1)["camera"], HW)
    assert len(frames) == 2
    for i, (got, ref) in enumerate(zip(frames, expected)):
        assert got.depth.shape == HW and got.color.shape == (*HW, 3)
        np.testing.assert_allclose(got.depth, ref.depth, atol=0.0005 + 1e-6)   # stored in whole mm
        assert ((got.depth > 0) == (ref.depth > 0)).all()
        np.testing.assert_allclose(got.intrinsics, ref.intrinsics, atol=1e-9)
        np.testing.assert_allclose(got.pose, ref.pose, atol=1e-8)
        assert np.abs(got.color.astype(int) - ref.color).mean() < 4                # JPEG quality 95
        np.testing.assert_array_equal(np.array(Image.open(folder / "label" / f"{i}.png")), ref.semantic)
        inst = np.array(Image.open(folder / "instance" / f"{i}.png"))
        assert inst.dtype == np.uint16
        np.testing.assert_array_equal(inst, ref.instance)


def test_scene_arrays(clean_dataset):
    arrays = load_scene(clean_dataset / "scenes" / "scene_0002")
    dtypes = dict(coord=np.float32, color=np.uint8, normal=np.float32, segment=np.int16, instance=np.int32,
                  boxes=np.float32)
    for name, dt in dtypes.items():
        assert arrays[name].dtype == dt, name
    n = len(arrays["coord"])
    assert arrays["coord"].shape == (n, 3) and arrays["color"].shape == (n, 3) and arrays["segment"].shape == (n,)
    assert arrays["boxes"].shape[1] == 8 and arrays["instance"].max() == len(arrays["boxes"]) - 1
    ref = sample_surface(make_scene(7, 2), 0.05, rng=scene_rngs(7, 2)["points"])
    np.testing.assert_array_equal(arrays["coord"], ref.coord)
    np.testing.assert_array_equal(arrays["segment"], ref.segment)


def test_deterministic_for_any_workers_and_seed_dependent(tmp_path):
    a = write_dataset(tmp_path / "a", seed=1, workers=1, **ARGS)
    b = write_dataset(tmp_path / "b", seed=1, workers=2, **ARGS)
    c = write_dataset(tmp_path / "c", seed=2, workers=1, **ARGS)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa), "workers=2 changed the files"
    for k in ("scenes/scene_0000/coord.npy", "scenes/scene_0000/boxes.npy", "frames/scene_0000/color/0.jpg"):
        assert fa[k] != fc[k]

    # resume: same arguments keep the files; a lost scene is rebuilt identically; other arguments are refused
    shutil.rmtree(a / "scenes" / "scene_0001")
    write_dataset(a, seed=1, workers=1, **ARGS)
    assert _files(a) == fa
    with pytest.raises(FileExistsError):
        write_dataset(a, seed=3, workers=1, **ARGS)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path / "other", seed=1, **ARGS)
