"""The ScanNet data-efficient benchmark's files in the formats it distributes: a Limited Reconstructions list of scene
names and a torch.save'd dict of labelled point indices; bad names and indices refused, other pickles not read."""
import os

import numpy as np
import pytest
import torch

from ppkt.data.few_labels import read_points_file, read_scenes_file
from ppkt.data.scenes import ClassSet, SegScenes
from ppkt.errors import UserError
from ppkt.train.finetune import select_training_scenes
from ppkt.train.finetune_config import FinetuneConfig

CLASSES = ClassSet("three", ("a", "b", "c"), "segment")


def make_scene(folder, n, rng):
    folder.mkdir(parents=True)
    np.save(folder / "coord.npy", rng.uniform(0, 2, (n, 3)).astype(np.float32))
    np.save(folder / "color.npy", rng.integers(0, 255, (n, 3)).astype(np.uint8))
    np.save(folder / "segment.npy", rng.integers(0, 3, n).astype(np.int64))
    return folder


@pytest.fixture
def scenes(tmp_path):
    rng = np.random.default_rng(0)
    return [make_scene(tmp_path / "scenes" / f"scene000{i}_00", 50, rng) for i in range(4)]


def test_limited_reconstructions_list_selects_its_scenes(tmp_path, scenes):
    lst = tmp_path / "5.txt"
    lst.write_text("scene0002_00\nscene0000_00\n\n")  # as np.loadtxt(dtype=str) reads it; a blank line at the end
    assert read_scenes_file(lst) == ["scene0002_00", "scene0000_00"]
    cfg = FinetuneConfig()
    cfg.data.scenes_file = str(lst)
    chosen, how = select_training_scenes(cfg, scenes, CLASSES)
    assert [p.name for p in chosen] == ["scene0000_00", "scene0002_00"] and "5.txt" in how
    lst.write_text("scene0002_00\nscene0999_00\n")
    with pytest.raises(UserError, match="scene0999_00") as err:
        select_training_scenes(cfg, scenes, CLASSES)
    assert "5.txt" in str(err.value)


def test_limited_annotations_file_keeps_its_points_only(tmp_path, scenes):
    path = tmp_path / "points20"
    torch.save({"scene0001_00": np.array([3, 7, 41], dtype=np.int64), "scene0003_00": np.array([0], np.int32)}, path)
    labelled = read_points_file(path)
    assert sorted(labelled) == ["scene0001_00", "scene0003_00"] and labelled["scene0001_00"].tolist() == [3, 7, 41]
    data = SegScenes(scenes, CLASSES, 0.2, train=False, augment=False, labelled_points=labelled,
                     labelled_points_file=str(path))
    truth = np.load(scenes[1] / "segment.npy")
    kept = data[1].point_labels.numpy()
    assert np.flatnonzero(kept >= 0).tolist() == [3, 7, 41] and kept[[3, 7, 41]].tolist() == truth[[3, 7, 41]].tolist()
    assert (data[0].point_labels.numpy() == -1).all()  # a scene the file does not name has no labelled point

    torch.save({"scene0001_00": np.array([3, 50])}, path)  # the scene has 50 points: index 50 is beyond it
    data = SegScenes(scenes, CLASSES, 0.2, train=False, augment=False, labelled_points=read_points_file(path),
                     labelled_points_file=str(path))
    with pytest.raises(UserError, match="scene0001_00 has 50 points, but the file lists point index 50"):
        data[1]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo unpickled",))


def test_points_file_that_is_not_indices_is_not_unpickled(tmp_path, capfd):
    path = tmp_path / "points50"
    torch.save({"scene0001_00": Payload()}, path)
    with pytest.raises(UserError, match="not read"):
        read_points_file(path)
    assert "unpickled" not in capfd.readouterr().out
    path.write_text("scene0001_00 1 2 3\n")
    with pytest.raises(UserError, match="points50"):
        read_points_file(path)
