"""Semantic segmentation network for fine-tuning: SR-UNet backbone + linear per-voxel classifier, and the loader
that puts a `ppkt pretrain` backbone export into it (the classifier stays newly initialised)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn

from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, CheckpointError, compare_state_dicts, load_checkpoint

__all__ = ["Segmentor", "LoadReport", "load_backbone"]


class Segmentor(nn.Module):
    """`backbone` (SR-UNet, per-voxel features) followed by `head` = nn.Linear(out_channels, num_classes).

    After `freeze_backbone()` (linear probe) the backbone runs without autograd: its parameters never get a
    gradient, while its batch norms still update their running statistics in training mode.
    """

    def __init__(self, arch: str, num_classes: int, in_channels: int = 3, channels: Sequence[int] | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.num_classes = arch, int(num_classes)
        self.backbone = build_sparse_unet(arch, in_channels, channels)
        self.head = nn.Linear(self.backbone.out_channels, self.num_classes)
        self.backbone_frozen = False  # not in the state dict: the saved model is the same either way

    def freeze_backbone(self) -> "Segmentor":
        """Fix the backbone's parameters (requires_grad False) and run it under torch.no_grad from now on."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        return self

    def forward(self, feats: Tensor, coords: Tensor, batch_size: int) -> Tensor:
        """feats (M, in_channels) float, coords (M, 4) int [b, x, y, z] voxel indices -> logits (M, num_classes)."""
        with torch.no_grad() if self.backbone_frozen else nullcontext():
            features = self.backbone(feats, coords, batch_size)
        return self.head(features)


@dataclass
class LoadReport:
    """What `load_backbone` did; keys are those of the segmentor's state dict (``backbone.*``, ``head.*``)."""

    path: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # in the model, not in the file: newly initialised
    unexpected: List[str] = field(default_factory=list)  # in the file, not in the model: ignored
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file shape, model shape)
    note: str = ""  # what the export says about itself (an encoder-only export)

    def summary(self) -> str:
        lines = [f"pretrained backbone {self.path}: loaded {len(self.loaded)} tensors"]
        for label, keys in (("new (not in the file, initialised from scratch)", self.missing),
                            ("ignored (in the file, not in the model)", self.unexpected),
                            ("ignored (shape mismatch)", [f"{k}: file {a} vs model {b}" for k, a, b in self.mismatched])):
            if keys:
                lines.append(f"  {label} ({len(keys)}): " + ", ".join(keys[:6]) + (" ..." if len(keys) > 6 else ""))
        return "\n".join(lines + ([f"  {self.note}"] if self.note else []))


def export_features(export: dict) -> str:
    """The input features a backbone export was pretrained on ("color" for exports made before they were recorded)."""
    about = export.get("pretrain") if isinstance(export.get("pretrain"), dict) else {}
    return about.get("input_features") or ("color" if export.get("in_channels", 3) == 3 else f"{export['in_channels']} channels")


def adapt_stem(state: dict, have: str, want: str, in_channels: int) -> str:
    """The stem weights (out, k, k, k, in) of an export read `have` features, the model reads `want`: channels both
    read keep their weights, the others start at zero. Returns what was done, for the report."""
    # the channels of each data.features (ppkt.data.features), by name
    order = {"color": ["r", "g", "b"], "color+normal": ["r", "g", "b", "nx", "ny", "nz"], "normal": ["nx", "ny", "nz"],
             "none": ["c1", "c2", "c3"]}
    if have not in order or want not in order:
        raise CheckpointError(f"cannot adapt a backbone of {have} to {want}")
    src, dst = order[have], order[want]
    w = state["conv_input.0.weight"]
    new = w.new_zeros(*w.shape[:-1], in_channels)
    kept = [c for c in dst if c in src]
    for c in kept:
        new[..., dst.index(c)] = w[..., src.index(c)]
    state["conv_input.0.weight"] = new
    return (f"input adapted from {have} to {want}: channels {', '.join(kept) or 'none'} kept, "
            f"{', '.join(c for c in dst if c not in src) or 'none'} new (zero)")


def load_backbone(segmentor: Segmentor, path: str | Path, features: str = "color", adapt: bool = False) -> LoadReport:
    """Copy the weights of a ``ppkt-backbone`` export (``<pretrain out_dir>/backbone.pth``) into `segmentor.backbone`.

    Raises CheckpointError (naming the file) when the export was made for another architecture, channel widths,
    input channels or input `features` (unless `adapt`: then its first layer is adapted, `adapt_stem`), or when not
    a single tensor matches. A leading ``module.`` (DDP) on the file's keys is dropped.
    """
    try:
        export = load_checkpoint(path, BACKBONE_FORMAT)
    except CheckpointError as err:
        if PRETRAIN_FORMAT in str(err):
            raise CheckpointError(f"{err}; pass the backbone export (backbone.pth beside checkpoints/) instead") from None
        raise
    bb = segmentor.backbone
    pretrained_on = export_features(export)
    adapted = ""
    if pretrained_on != features:
        if not adapt:
            raise CheckpointError(f"{path}: backbone pretrained on {pretrained_on} input, but this run reads {features} "
                                  "(data.features); fine-tune with the same data.features, or set model.adapt_input=true to "
                                  "adapt its first layer (the channels both read keep their weights)")
        state = dict(export["state_dict"])
        adapted = adapt_stem(state, pretrained_on, features, bb.in_channels)
        export = {**export, "state_dict": state, "in_channels": bb.in_channels}
    want = {"arch": segmentor.arch, "in_channels": bb.in_channels, "channels": list(bb.channels)}
    have = {k: export.get(k) for k in want}
    have["channels"] = list(have["channels"]) if have["channels"] is not None else None
    if have != want:
        raise CheckpointError(
            f"{path}: backbone pretrained as {have['arch']} channels={have['channels']} in_channels={have['in_channels']}, "
            f"but the model is {want['arch']} channels={want['channels']} in_channels={want['in_channels']}; "
            f"set model.arch / model.channels to those of the export")
    if not isinstance(export.get("state_dict"), dict):
        raise CheckpointError(f"{path}: no 'state_dict' in this backbone export")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in export["state_dict"].items()}
    full = {"backbone." + k: v for k, v in state.items()}
    diff = compare_state_dicts(full, segmentor.state_dict())
    about = export.get("pretrain") if isinstance(export.get("pretrain"), dict) else {}
    note = (f"encoder only: pretrained by {about.get('method', '?')}, which trains the encoder; the decoder and the "
            "head start from scratch") if about.get("part") == "encoder" else ""
    note = "; ".join(n for n in (note, adapted) if n)
    report = LoadReport(str(path), diff.matched, diff.missing, diff.unexpected, diff.mismatched, note)
    matched = {k: full[k] for k in diff.matched}
    if not matched:
        raise CheckpointError(f"{path}: no tensor of this file matches the {segmentor.arch} backbone "
                              f"({len(state)} keys in the file, e.g. {', '.join(list(state)[:3]) or 'none'})")
    segmentor.load_state_dict(matched, strict=False)
    return report
