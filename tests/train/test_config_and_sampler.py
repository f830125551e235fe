from pathlib import Path

import pytest

from ppkt.config import ConfigError, PretrainConfig, load_config
from ppkt.train.sampler import IterationBatchSampler

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_paper_config_holds_the_paper_recipe():
    cfg = load_config(CONFIGS / "pretrain_scannet.yaml")
    assert isinstance(cfg, PretrainConfig)
    assert (cfg.teacher.arch, cfg.teacher.stage, cfg.student.arch) == ("resnet50", "layer4", "SR-UNet34")
    assert (cfg.loss.embed_dim, cfg.loss.temperature, cfg.data.voxel_size) == (128, 0.04, 0.025)
    assert (cfg.data.image_size, cfg.train.batch_size, cfg.train.iterations) == ([480, 640], 24, 60000)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.5, 0.9, 1e-4)


def test_overrides_are_typed_and_unknown_keys_fail():
    cfg = load_config(CONFIGS / "pretrain_demo.yaml", ["train.iterations=7", "loss.temperature=0.07"])
    assert cfg.train.iterations == 7 and cfg.loss.temperature == 0.07
    with pytest.raises(ConfigError, match="itertions"):
        load_config(CONFIGS / "pretrain_demo.yaml", ["train.itertions=7"])
    with pytest.raises(ConfigError, match="iterations"):
        load_config(None, ["train.iterations=many"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(CONFIGS / "nope.yaml")


def test_sampler_is_deterministic_resumable_and_splits_over_processes():
    full = list(IterationBatchSampler(n=7, batch_size=4, seed=3, start=0, stop=6))
    assert all(len(b) == 4 for b in full)
    # every frame exactly once per epoch of 7 stream positions
    stream = [i for b in full for i, _ in b]
    assert sorted(stream[:7]) == list(range(7)) and sorted(stream[7:14]) == list(range(7))
    assert list(IterationBatchSampler(7, 4, 3, start=2, stop=6)) == full[2:]
    ranks = [list(IterationBatchSampler(7, 4, 3, 0, 6, rank=r, world_size=2)) for r in range(2)]
    for it in range(6):
        assert sorted(ranks[0][it] + ranks[1][it]) == sorted(full[it])
    assert list(IterationBatchSampler(7, 4, 4, 0, 6)) != full  # another seed, another order
    with pytest.raises(ValueError, match="divisible"):
        IterationBatchSampler(7, 5, 0, 0, 1, rank=0, world_size=2)
