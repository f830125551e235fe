"""Few-label protocols of `ppkt finetune`: stratified scene selection (data.stratified) and limited annotations
(data.limited_points), on scene folders written by the synthetic world's own writer with known class content."""
import json
from pathlib import Path

import numpy as np
import pytest

from ppkt.config import ConfigError, load_config
from ppkt.data.scenes import (ClassSet, SceneError, SegScenes, cover_order, list_scenes, scene_classes, select_scenes,
                              select_scenes_stratified)
from ppkt.synthetic.pointcloud import PointCloud, save_scene
from ppkt.train.finetune import finetune
from ppkt.train.finetune_config import FinetuneConfig

ROOT = Path(__file__).resolve().parents[2]
TOY = ClassSet("toy", tuple(f"c{i}" for i in range(8)), "segment")
COMMON = (0, 1)  # floor and wall: in every scene
# scene index -> the rare classes it holds besides COMMON; all other scenes hold COMMON only
RARE = {4: (4, 5), 7: (2,), 13: (3,)}


def write_labelled_scene(folder: Path, classes, n: int = 400, unlabelled: float = 0.1, seed: int = 0) -> Path:
    """n random points in a 1 m cube, labels cycling through `classes` (each one present), a share unlabelled (-1)."""
    rng = np.random.default_rng(seed)
    segment = np.asarray(classes)[np.arange(n) % len(classes)]
    segment[rng.random(n) < unlabelled] = -1
    segment[: len(classes)] = classes  # every class keeps at least one labelled point
    pc = PointCloud(coord=rng.uniform(0, 1, (n, 3)), color=rng.integers(0, 256, (n, 3)),
                    normal=np.tile([0.0, 0.0, 1.0], (n, 1)), segment=segment, instance=np.full(n, -1))
    return save_scene(folder, pc, np.zeros((0, 8)))


def classes_of(index: int) -> tuple:
    return COMMON + RARE.get(index, ())


def rare_world(root: Path, scenes: int = 20) -> Path:
    """`scenes` training scenes: all hold classes 0 and 1; scene 4 also 4 and 5, scene 7 also 2, scene 13 also 3."""
    names = [f"room_{i:02d}" for i in range(scenes)]
    for i, name in enumerate(names):
        write_labelled_scene(root / "scenes" / name, classes_of(i), n=300, seed=i)
    (root / "splits").mkdir(parents=True)
    (root / "splits" / "train.txt").write_text("".join(n + "\n" for n in names))
    (root / "classes.json").write_text(json.dumps({"names": list(TOY.names)}))
    return root


def held_by(root: Path):
    scenes = list_scenes(root, "train")
    return scenes, [scene_classes(p, TOY) for p in scenes]


def union(selected, scenes, held) -> set:
    return set().union(*(h for p, h in zip(scenes, held) if p in selected))


# ------------------------------------------------------------------------------------------ scene classes
def test_scene_classes_are_the_labelled_class_ids_of_the_label_file(tmp_path):
    folder = write_labelled_scene(tmp_path / "s", (0, 3, 6), seed=1)
    assert scene_classes(folder, TOY) == {0, 3, 6}  # -1 (unlabelled) is not a class
    scannet_like = ClassSet("toy255", TOY.names, "segment", ignore_index=255)
    segment = np.load(folder / "segment.npy")
    segment[segment == 6] = 255
    np.save(folder / "segment.npy", segment)
    assert scene_classes(folder, scannet_like) == {0, 3}  # the stored ignore value is no class either
    segment[0] = 9  # 8 classes
    np.save(folder / "segment.npy", segment)
    with pytest.raises(SceneError, match=r"s/segment\.npy holds class id 9"):
        scene_classes(folder, TOY)


# ------------------------------------------------------------------------------------------ stratified selection
def test_stratified_selection_covers_every_class_when_the_count_allows(tmp_path):
    scenes, held = held_by(rare_world(tmp_path / "w"))
    assert held == [set(classes_of(i)) for i in range(20)]  # what rare_world wrote
    present = set(range(6))
    random_missed = 0
    for seed in range(8):
        for fraction, count in [(0.15, 3), (0.5, 10)]:  # 3 scenes (4, 7, 13) are the smallest cover
            picked = select_scenes_stratified(scenes, fraction, seed, held)
            assert len(picked) == count == len(select_scenes(scenes, fraction, seed))
            assert union(picked, scenes, held) == present
            assert picked == sorted(picked, key=scenes.index) and len(set(picked)) == count
            assert picked == select_scenes_stratified(scenes, fraction, seed, held)  # same seed, same scenes
        random_missed += union(select_scenes(scenes, 0.15, seed), scenes, held) != present
        assert set(select_scenes_stratified(scenes, 0.15, seed, held)) == {scenes[4], scenes[7], scenes[13]}
    assert random_missed >= 6  # the random selection of 3 scenes almost never holds all three rare scenes


def test_stratified_selection_covers_as_many_classes_as_it_can_when_too_few_scenes(tmp_path):
    scenes, held = held_by(rare_world(tmp_path / "w"))
    for seed in range(6):
        one = select_scenes_stratified(scenes, 0.05, seed, held)  # 1 scene: the one with 4 classes
        assert one == [scenes[4]]
        two = select_scenes_stratified(scenes, 0.1, seed, held)  # 2 scenes: 5 of the 6 classes, no more possible
        assert scenes[4] in two and len(two) == 2 and len(union(two, scenes, held)) == 5


def test_stratified_selection_is_seeded_nested_and_random_among_equal_scenes(tmp_path):
    scenes, held = held_by(rare_world(tmp_path / "w"))
    fractions = [0.05, 0.1, 0.15, 0.3, 0.5, 1.0]
    for seed in range(4):
        chosen = [set(select_scenes_stratified(scenes, f, seed, held)) for f in fractions]
        assert all(a <= b for a, b in zip(chosen, chosen[1:]))  # nested across fractions for one seed
        assert chosen[-1] == set(scenes)
    fill = [select_scenes_stratified(scenes, 0.3, seed, held) for seed in range(4)]
    assert len({tuple(f) for f in fill}) > 1  # beyond the cover, the seed chooses the scenes
    same = [{0, 1}] * 20  # no class to cover: the stratified selection is the random one
    for seed in range(4):
        assert select_scenes_stratified(scenes, 0.3, seed, same) == select_scenes(scenes, 0.3, seed)


def test_cover_order_ties_follow_the_given_order():
    held = [{0}, {1}, {0, 1}, {2}, {1}]
    assert cover_order(held, [0, 1, 2, 3, 4]) == [2, 3, 0, 1, 4]
    assert cover_order(held, [4, 3, 1, 0, 2]) == [2, 3, 4, 1, 0]  # {0, 1} first, then {2}; the rest in order
    assert cover_order([{0}, {1}, {1}], [2, 1, 0]) == [2, 0, 1]  # equal gains: the earliest in the order


def test_finetune_trains_on_the_stratified_scenes_and_resume_refuses_another_selection(tmp_path, capsys):
    world = rare_world(tmp_path / "w")
    scenes, held = held_by(world)

    def config(out: Path, *extra: str) -> FinetuneConfig:
        return load_config(ROOT / "configs" / "finetune_synthetic.yaml", [
            f"data.root={world}", f"data.classes={world / 'classes.json'}", "data.val_split=''", "data.voxel_size=0.02",
            "data.label_fraction=0.15", "model.arch=SR-UNet14", "model.channels=[8,8,8,8,8,8,8,8]",
            "train.batch_size=1", "train.workers=0", "train.threads=1", "train.iterations=2", f"train.out_dir={out}",
            *extra], FinetuneConfig)

    out = finetune(config(tmp_path / "run", "data.stratified=true"), stop_after=1)
    written = (out / "train_scenes.txt").read_text().split()
    assert written == [p.name for p in select_scenes_stratified(scenes, 0.15, 0, held)] == ["room_04", "room_07", "room_13"]
    assert "stratified 0.15 of the scenes: they hold 6 of the 6 classes present" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"data\.stratified: True -> False"):
        finetune(config(tmp_path / "run", "data.stratified=false"), resume=True)
    finetune(config(tmp_path / "run", "data.stratified=true"), resume=True)  # the same selection goes on


# ------------------------------------------------------------------------------------------ limited annotations
def point_level(scenes, k: int, seed: int):
    """Per scene, the labels of its original points after data.limited_points=k (evaluation mode: no resampling)."""
    ds = SegScenes(scenes, TOY, voxel_size=0.05, train=False, augment=False, limited_points=k, seed=seed)
    return [ds[i].point_labels.numpy() for i in range(len(ds))]


def test_limited_points_keep_exactly_k_labelled_points_per_scene_the_same_for_a_seed_and_nested(tmp_path):
    scenes = [write_labelled_scene(tmp_path / f"s{i}", (0, 1, 2, 3), n=1500, seed=i) for i in range(3)]
    scenes.append(write_labelled_scene(tmp_path / "twin", (0, 1, 2, 3), n=1500, seed=0))  # s0's labels, another name
    scenes.append(write_labelled_scene(tmp_path / "sparse", (0, 5), n=1500, unlabelled=0.92, seed=9))
    stored = [np.load(p / "segment.npy").astype(np.int64) for p in scenes]
    labelled = [int((s >= 0).sum()) for s in stored]
    assert min(labelled[:4]) > 1000 and 50 < labelled[4] < 200
    kept = {}
    for k in (20, 50, 200):
        got = point_level(scenes, k, seed=3)
        kept[k] = [np.nonzero(g >= 0)[0] for g in got]
        for g, s, n in zip(got, stored, labelled):
            assert int((g >= 0).sum()) == min(k, n)  # exactly k (all of them when the scene has fewer)
            assert np.array_equal(g[g >= 0], s[g >= 0])  # a kept point keeps its label
            assert (s[g < 0] < 0).sum() == (s < 0).sum()  # unlabelled points stay unlabelled
        again = point_level(scenes, k, seed=3)  # a new dataset, the same seed: the same points
        assert all(np.array_equal(a, b) for a, b in zip(got, again))
        other = point_level(scenes, k, seed=4)
        assert not any(np.array_equal(a, b) for a, b in zip(got[:4], other[:4]))
        assert not np.array_equal(kept[k][0], kept[k][3])  # same labels, another scene name: other points
    for i in range(len(scenes)):  # nested: the points kept at 20 are among those at 50, and those among 200
        assert set(kept[20][i]) <= set(kept[50][i]) <= set(kept[200][i])
