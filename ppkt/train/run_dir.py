"""A run's output folder: a new run never writes over an old one, a resumed run keeps the config it started with,
and a finished run is reused (by the benchmarks) only when every setting that produced it matches.

`start_run` is called before any folder is created: without --resume a folder holding a checkpoint is refused
(or emptied of the run's own files with --overwrite). `check_resume` compares the config of the resumed checkpoint
(the truth about the run) with the one asked for now; only the keys of a short safe list may differ.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from omegaconf import OmegaConf

from ppkt.atomic import unwritable
from ppkt.config import ConfigError, config_to_dict, upgrade_saved

# keys that may change on --resume: they say how long and where the run goes on, not what it computes
PRETRAIN_SAFE_KEYS = ("train.iterations", "train.log_every", "train.checkpoint_every", "train.workers", "train.threads",
                      "train.device", "train.out_dir")
# fine-tuning: train.iterations is not safe, the poly / cosine schedule is defined over it
FINETUNE_SAFE_KEYS = ("train.log_every", "train.checkpoint_every", "train.eval_every", "train.eval_ply", "train.workers",
                      "train.threads", "train.device", "train.out_dir")

# what ppkt pretrain / finetune write into train.out_dir (all that --overwrite deletes; nothing else is touched)
RUN_FILES = ("checkpoints", "tensorboard", "eval", "metrics.jsonl", "config.yaml", "backbone.pth", "loss_curve.png",
             "train_scenes.txt")


def start_run(out: Path, checkpoint: Path, resume: bool, overwrite: bool, command: str,
              owned: Optional[Sequence[Path]] = None, place: str = "train.out_dir") -> None:
    """Refuse to start a new run where one exists (unless `overwrite`, which deletes the old run's files: `owned`,
    by default RUN_FILES in `out`). `place` names the setting that chooses the output."""
    why = unwritable(out)
    if why:
        raise ConfigError(f"{place}: {out}: {why}; choose another folder")
    if resume:
        if overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: choose one")
        if not checkpoint.is_file():
            raise ConfigError(f"{checkpoint}: nothing to resume (no checkpoint); start the run without --resume")
        return
    if not checkpoint.is_file():
        return
    if not overwrite:
        raise ConfigError(f"{out}: already holds a run ({checkpoint}); continue it with `ppkt {command} ... --resume`, "
                          f"choose another {place}, or pass --overwrite to delete that run and start over")
    for path in owned if owned is not None else [out / name for name in RUN_FILES]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: Mapping[str, Any], now: Mapping[str, Any], safe: Iterable[str] = ()) -> List[str]:
    """`key: saved -> now` for every key that differs and is not in `safe` (nested dicts compared key by key)."""
    a, b, safe = flatten(saved), flatten(now), set(safe)
    absent = "<absent>"
    return [f"{k}: {a.get(k, absent)!r} -> {b.get(k, absent)!r}"
            for k in sorted(set(a) | set(b)) if k not in safe and (k not in a or k not in b or a[k] != b[k])]


def check_resume(saved: Mapping[str, Any], cfg: Any, safe: Iterable[str], checkpoint: Path) -> None:
    """ConfigError with the diff when `cfg` differs from the checkpoint's config outside the `safe` keys.

    The saved config is merged onto the schema's defaults first, so a key added to ppkt after the run started
    compares equal at its default.
    """
    saved = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(type(cfg)), upgrade_saved(saved)))
    changes = config_changes(saved, config_to_dict(cfg), safe)
    if changes:
        raise ConfigError(f"{checkpoint}: the run was made with another config; --resume may change only "
                          f"{', '.join(safe)}. Changed:\n  " + "\n  ".join(changes)
                          + "\n(put the values back, or start a new run in another train.out_dir)")


# ------------------------------------------------------------------------------------------------ reuse
def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (what a run started from, e.g. a pretrained backbone)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(path: Path) -> str:
    """The identity of an input file for reuse: for a ppkt weights file (a backbone export, a 2D teacher) the sha256
    of its tensors (names, dtypes, shapes and values), so that metadata such as the commit that wrote it does not
    make the same weights another input; for any other file its `file_digest`."""
    import torch

    if Path(path).suffix not in (".pth", ".pt"):
        return file_digest(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file: its bytes are its identity
        return file_digest(path)
    tensors = obj.get("state_dict") if isinstance(obj, dict) and obj.get("format") == "ppkt-backbone" else \
        {**obj.get("backbone", {}), **{f"head.{k}": v for k, v in obj.get("head", {}).items()}} \
        if isinstance(obj, dict) and obj.get("format") == "ppkt-teacher2d" else None
    if tensors is None:
        return file_digest(path)
    digest = hashlib.sha256(b"weights")
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return "weights:" + digest.hexdigest()


def run_settings(cfg: Any, inputs: Mapping[str, Path] = {}) -> Dict[str, Any]:
    """Everything that produced a run: its whole config and the identity (`weights_digest`) of each input file."""
    return json.loads(json.dumps({"config": config_to_dict(cfg),
                                  "inputs": {name: weights_digest(Path(p)) for name, p in sorted(inputs.items())}}))

