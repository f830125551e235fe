"""Run folders: a new run never replaces an old one, resume diffs, and reuse of finished runs by their settings."""
import hashlib
from pathlib import Path

import pytest

from ppkt.config import ConfigError, PretrainConfig, config_to_dict, load_config
from ppkt.train.run_dir import PRETRAIN_SAFE_KEYS, check_resume, config_changes, run_settings, start_run

ROOT = Path(__file__).resolve().parents[2]


def demo(*overrides: str) -> PretrainConfig:
    return load_config(ROOT / "configs" / "pretrain_demo.yaml", list(overrides))


def test_config_changes_lists_every_changed_key_but_the_safe_ones():
    saved = {"a": {"b": 1, "c": [1, 2]}, "train": {"iterations": 10}}
    now = {"a": {"b": 2, "c": [1, 2], "d": None}, "train": {"iterations": 20}}
    assert config_changes(saved, now) == ["a.b: 1 -> 2", "a.d: '<absent>' -> None", "train.iterations: 10 -> 20"]
    assert config_changes(saved, now, ["train.iterations", "a.d"]) == ["a.b: 1 -> 2"]


def test_check_resume_accepts_safe_keys_and_defaults_of_keys_added_later():
    saved = config_to_dict(demo("train.iterations=5", "train.threads=1"))
    del saved["data"]["frame"]  # a run made before data.frame existed: it ran at today's default
    check_resume(saved, demo("train.iterations=9", "train.threads=2"), PRETRAIN_SAFE_KEYS, Path("x.pt"))
    with pytest.raises(ConfigError, match=r"x\.pt: .*\n  data\.frame: 'camera' -> 'world'\n  loss\.temperature: 0\.04 -> 0\.07\n"):
        check_resume(saved, demo("data.frame=world", "loss.temperature=0.07"), PRETRAIN_SAFE_KEYS, Path("x.pt"))


def test_start_run_refuses_an_existing_run_and_overwrite_deletes_only_the_runs_files(tmp_path):
    ckpt = tmp_path / "checkpoints" / "last.pt"
    start_run(tmp_path, ckpt, resume=False, overwrite=False, command="pretrain")  # nothing there: fine
    with pytest.raises(ConfigError, match="nothing to resume"):
        start_run(tmp_path, ckpt, resume=True, overwrite=False, command="pretrain")
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds a run"):
        start_run(tmp_path, ckpt, resume=False, overwrite=False, command="pretrain")
    with pytest.raises(ConfigError, match="contradict"):
        start_run(tmp_path, ckpt, resume=True, overwrite=True, command="pretrain")
    start_run(tmp_path, ckpt, resume=False, overwrite=True, command="pretrain")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_run_settings_change_with_the_config_and_the_inputs_content(tmp_path):
    backbone = tmp_path / "backbone.bin"
    backbone.write_bytes(b"weights v1")
    settings = run_settings(demo("train.iterations=50"), {"backbone": backbone})
    assert run_settings(demo("train.iterations=50"), {"backbone": backbone}) == settings
    assert run_settings(demo("train.iterations=60"), {"backbone": backbone}) != settings
    assert settings["inputs"]["backbone"] == hashlib.sha256(b"weights v1").hexdigest()  # not a weights file: its bytes
    backbone.write_bytes(b"weights v2")  # same path, other content
    assert run_settings(demo("train.iterations=50"), {"backbone": backbone}) != settings


def test_a_renamed_key_is_named_in_a_config_file_and_upgraded_in_a_saved_config(tmp_path):
    from ppkt.config import PretrainConfig, load_config

    old = tmp_path / "old.yaml"
    old.write_text("data:\n  pairs: frames/pairs.tsv\n")
    with pytest.raises(ConfigError, match=r"old.yaml: data.pairs is now called data.overlaps"):
        load_config(old)
    with pytest.raises(ConfigError, match="data.pairs is now called data.overlaps"):
        load_config(None, ["data.pairs=x.tsv"])
    cfg = load_config(None, ["data.overlaps=x.tsv"], PretrainConfig)
    saved = config_to_dict(cfg)
    saved["data"]["pairs"] = saved["data"].pop("overlaps")  # as a checkpoint written before the rename holds it
    check_resume(saved, cfg, PRETRAIN_SAFE_KEYS, tmp_path / "last.pt")  # the same run: no error
    saved["data"]["pairs"] = "y.tsv"
    with pytest.raises(ConfigError, match="data.overlaps: 'y.tsv' -> 'x.tsv'"):
        check_resume(saved, cfg, PRETRAIN_SAFE_KEYS, tmp_path / "last.pt")
