"""Checkpoints: written atomically (temp file + rename), read without unpickling code, checked against the model."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

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


def load_problem(err: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in one line, without torch's advice to unpickle it anyway:
    the blocked global for a pickle of other objects, else the error's first line."""
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.strip().startswith(advice)]
    blocked = next((line for line in lines if "GLOBAL" in line), None)
    if blocked:
        name = re.search(r"GLOBAL ([\w.]+)", blocked)
        return ("it holds pickled code or objects other than tensors and plain data"
                + (f" ({name.group(1)}); ppkt does not load those" if name else "; ppkt does not load those"))
    if "Weights only load failed" in str(err):
        return f"not a torch file, or a damaged one ({lines[0] if lines else 'unreadable'})"
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def load_checkpoint(path: str | Path, expected_format: str) -> Dict[str, Any]:
    """Read a ppkt checkpoint with weights_only=True and check its format tag."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds arbitrary pickled objects
        raise CheckpointError(f"{path}: cannot read checkpoint ({load_problem(err)})") from None
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        hint = ""
        if found is None and expected_format == BACKBONE_FORMAT:
            hint = (" (a file without ppkt's format tag; a Pointcept or other SpUNet checkpoint is converted with "
                    f"`ppkt pointcept import --checkpoint {path} --out backbone.pth`)")
        elif found is None:
            hint = " (a file without ppkt's format tag: not written by ppkt)"
        raise CheckpointError(f"{path}: expected a {expected_format!r} file, found {found!r}{hint}")
    return state


@dataclass
class KeyComparison:
    """A file's state dict against a model's: keys in both with equal shapes, and the three kinds of difference."""

    matched: List[str] = field(default_factory=list)  # in both, same shape (file order)
    missing: List[str] = field(default_factory=list)  # in the model, not in the file (model order)
    unexpected: List[str] = field(default_factory=list)  # in the file, not in the model (file order)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file shape, model shape)

    def problems(self, shown: int = 5) -> List[str]:
        """One line per kind of difference, e.g. "missing keys (3): a, b, c" (at most `shown` keys, then "...")."""
        lines = []
        shapes = [f"{k}: file {a} vs model {b}" for k, a, b in self.mismatched]
        for label, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                            ("shape mismatches", shapes)):
            if keys:
                lines.append(f"{label} ({len(keys)}): " + ", ".join(keys[:shown]) + (" ..." if len(keys) > shown else ""))
        return lines


def compare_state_dicts(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor],
                        optional: Optional[Callable[[str], bool]] = None) -> KeyComparison:
    """Compare a file's state dict with a model's (`module.state_dict()`) key by key and shape by shape.

    Keys for which `optional(key)` is true (e.g. BatchNorm's num_batches_tracked) are never reported missing or
    unexpected.
    """
    optional = optional or (lambda key: False)
    out = KeyComparison()
    for key, value in state.items():
        if key not in model_state:
            if not optional(key):
                out.unexpected.append(key)
        elif tuple(value.shape) != tuple(model_state[key].shape):
            out.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            out.matched.append(key)
    out.missing = [k for k in model_state if k not in state and not optional(k)]
    return out


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """load_state_dict that fails (CheckpointError naming the file) with a readable list of missing, unexpected and
    mis-shaped keys."""
    problems = compare_state_dicts(state, module.state_dict()).problems()
    if problems:
        lines = [f"{path}: the {what} in this file does not fit the model built from the config"]
        raise CheckpointError("\n".join(lines + ["  " + p for p in problems]))
    module.load_state_dict(state)
