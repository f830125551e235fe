"""Teacher cache: cached features are the live teacher's rounded to float16 on the augmentations it serves (plain and
flipped images), pretraining with it gives the live losses, and a cache made for anything else is refused."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ppkt.cli import main as cli_main
from ppkt.config import ConfigError, load_config, validate_pretrain
from ppkt.data.pairs import PixelPointFrames, collate_pairs
from ppkt.data.teacher_cache import MANIFEST, TeacherCache, TeacherCacheError, write_teacher_cache
from ppkt.models.teacher import build_teacher
from ppkt.train.logging import read_metrics
from ppkt.train.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[2]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
DEMO = ROOT / "configs" / "pretrain_demo.yaml"
TINY = [
    f"data.roots=[{FRAMES}]", "data.image_size=[60,80]", "data.voxel_size=0.1", "data.stride=4",
    "augment.resize=[1,1]", "augment.flip=0.5", "student.arch=SR-UNet14", "student.channels=[8,16,32,32,32,32,24,24]",
    "teacher.arch=efficientnet_lite0", "teacher.weights=imagenet", "teacher.stage=stage4", "loss.n_sub=256",
    "loss.embed_dim=32", "optim.lr=0.05", "train.batch_size=2", "train.workers=0", "train.log_every=1", "train.threads=2",
]


def tiny(*extra: str):
    return load_config(DEMO, TINY + list(extra))


@pytest.fixture(scope="module")
def teacher():
    return build_teacher("efficientnet_lite0", "imagenet", "stage4")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, teacher):
    """Plain + flipped features of the 5 frames (stride 4) at 60x80, one frame (2 images) per teacher forward,
    on 1 thread (as the tests that compare bits: the thread count changes the kernels' summation order)."""
    out = tmp_path_factory.mktemp("cache")
    cfg = tiny()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_teacher_cache(out, PixelPointFrames(cfg.data, cfg.augment).folders, teacher, cfg.data.image_size, True, batch_size=1)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.usefixtures("one_thread")
def test_cached_features_are_the_live_teachers_rounded_to_float16(cache_dir, teacher):
    cfg = tiny()
    data = PixelPointFrames(cfg.data, cfg.augment, TeacherCache(cache_dir))
    flips = set()
    for index in range(len(data)):
        for seed in range(4):
            s = data[(index, seed)]
            flips.add(s.image_transform.flip)
            assert s.teacher_features.dtype == torch.float16 and s.teacher_features.shape == (112, 4, 5)
            # the cache ran the teacher on [plain, flipped] of one frame: the same batch gives the same bits
            plain = s.image.flip(-1) if s.image_transform.flip else s.image
            live = teacher(torch.stack([plain, plain.flip(-1)]))[int(s.image_transform.flip)]
            assert torch.equal(s.teacher_features, live.half())
    assert flips == {False, True}
    # a pretraining batch runs the teacher on other images beside it: float32 results move by ~1e-6 of the map's
    # scale (another batch, other kernels), within float16's rounding otherwise
    batch = collate_pairs([data[(index, 1)] for index in range(4)])
    live = teacher(batch.images)
    err = (batch.teacher_features.float() - live).abs()
    assert (err <= live.abs() * 2**-11 + 1e-6 * live.abs().max()).all()


@pytest.mark.usefixtures("keep_torch_threads")
def test_pretraining_with_the_cache_gives_the_live_losses(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert cli_main(["cache-teacher", "--config", str(DEMO), "--out", str(cache), *TINY]) == 0
    assert f"teacher.cache={cache}" in capsys.readouterr().out
    losses = {}
    for name, extra in (("live", []), ("cached", [f"teacher.cache={cache}"])):
        out = pretrain(tiny(f"train.out_dir={tmp_path / name}", "train.iterations=3", *extra))
        losses[name] = [r["loss"] for r in read_metrics(out / "metrics.jsonl")]
    assert len(losses["live"]) == 3
    # the features differ by float16 rounding (relative 2^-11): the first loss by ~1e-6 relative, and the updates
    # this makes to g2D and the student let it grow to ~1e-4 by the third iteration
    np.testing.assert_allclose(losses["cached"][0], losses["live"][0], rtol=2**-14)
    np.testing.assert_allclose(losses["cached"], losses["live"], rtol=2**-10)


def test_a_cache_made_for_anything_else_is_refused(cache_dir, tmp_path):
    manifest = cache_dir / MANIFEST
    cache = TeacherCache(cache_dir)
    with pytest.raises(TeacherCacheError, match=rf"{manifest}: made for data.image_size=\[60, 80\].*\[48, 64\]"):
        PixelPointFrames(tiny("data.image_size=[48,64]").data, tiny().augment, cache)
    with pytest.raises(TeacherCacheError, match=rf"{manifest}: .*frame folder {FRAMES}: 5 frame\(s\) not cached"):
        PixelPointFrames(tiny("data.stride=2").data, tiny().augment, cache)
    with pytest.raises(TeacherCacheError, match=rf"{manifest}: made for another teacher: teacher.stage is 'stage4' "
                                                r"there, 'stage3' here.*teacher.state_sha256"):
        cache.check_teacher(build_teacher("efficientnet_lite0", "imagenet", "stage3"))
    with pytest.raises(TeacherCacheError, match=r"teacher.state_sha256 is .* \(weights '.*\.pth' there, 'none' here\)"):
        cache.check_teacher(build_teacher("efficientnet_lite0", "none", "stage4"))
    with pytest.raises(TeacherCacheError, match=rf"{tmp_path / 'none' / MANIFEST} not found.*ppkt cache-teacher"):
        TeacherCache(tmp_path / "none")
    # a random resize cannot be cached: refused before any work
    with pytest.raises(ConfigError, match=r"augment.resize: must be \[1, 1\] with teacher.cache, got \[0.9, 1.1\]"):
        validate_pretrain(tiny(f"teacher.cache={cache_dir}", "augment.resize=[0.9,1.1]"))
    validate_pretrain(tiny(f"teacher.cache={cache_dir}", "augment.resize=[0.9,1.1]", "augment.enabled=false"))
    with pytest.raises(ConfigError, match="augment.resize"):
        PixelPointFrames(tiny().data, tiny("augment.resize=[0.9,1.1]").augment, cache)
    # a cache without the mirrored images serves no flips
    plain = tmp_path / "plain"
    teacher = build_teacher("efficientnet_lite0", "imagenet", "stage4")
    folders = PixelPointFrames(tiny().data, tiny().augment).folders
    write_teacher_cache(plain, folders, teacher, [60, 80], flips=False)
    with pytest.raises(TeacherCacheError, match=r"holds unflipped features only .* probability 0.5"):
        PixelPointFrames(tiny().data, tiny().augment, TeacherCache(plain))
    PixelPointFrames(tiny().data, tiny("augment.flip=0").augment, TeacherCache(plain))
    # and writing other settings into an existing cache is refused
    with pytest.raises(TeacherCacheError, match=r"a cache of other settings is there \(variants is \['plain'\] there, "
                                                r"\['plain', 'flipped'\] here\)"):
        write_teacher_cache(plain, folders, teacher, [60, 80], flips=True)


def test_writing_resumes_per_frame_folder(tmp_path, teacher):
    cfg = tiny()
    folders = PixelPointFrames(cfg.data, cfg.augment).folders
    out = tmp_path / "cache"
    first = write_teacher_cache(out, folders, teacher, [60, 80], flips=False)
    file = out / first["folders"][0]["file"]
    stamp, values = file.stat().st_mtime_ns, np.load(file)
    assert values.shape == (5, 1, 112, 4, 5) and values.dtype == np.float16 and np.abs(values).max() > 0
    assert write_teacher_cache(out, folders, teacher, [60, 80], flips=False) == first
    assert file.stat().st_mtime_ns == stamp  # finished: skipped
    file.unlink()
    (out / (file.name + ".partial")).write_bytes(b"half-written")  # an interrupted run's leftover
    assert write_teacher_cache(out, folders, teacher, [60, 80], flips=False) == first
    assert np.array_equal(np.load(file), values) and not (out / (file.name + ".partial")).exists()
    assert json.loads((out / MANIFEST).read_text())["folders"][0]["names"] == folders[0].names
    assert sorted(os.listdir(out)) == sorted([MANIFEST, file.name])
