"""Checkpoints: written atomically (temp file + rename), read without unpickling code, checked against the model."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping

import torch
from torch import nn

from ppkt.atomic import atomic_path
from ppkt.errors import UserError

PRETRAIN_FORMAT = "ppkt-pretrain-checkpoint"
BACKBONE_FORMAT = "ppkt-backbone"


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable or made for another model; the message names the file."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save through `atomic_path`, fsync'ed before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def load_checkpoint(path: str | Path, expected_format: str) -> Dict[str, Any]:
    """Read a ppkt checkpoint with weights_only=True and check its format tag."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds arbitrary pickled objects
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path}: expected a {expected_format!r} file, found {found!r}")
    return state


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """load_state_dict that fails with a readable list of missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{path}: the {what} in this file does not fit the model built from the config"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                lines.append(f"  {label} ({len(keys)}): " + ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else ""))
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state)
