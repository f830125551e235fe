"""Pointcept interoperability: ppkt's SR-UNet has the parameter names and shapes of Pointcept's SpUNet-v1m1.

Pointcept loads fine-tuning weights from `checkpoint["state_dict"]` with keys `[module.]backbone.<name>`
(its CheckpointLoader hook, strict=False); its SpUNet-v1m1 keeps the classifier `final.*` inside the
backbone, which a pretrained export does not have (it stays new, as in ppkt's own fine-tuning).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping

import torch
from torch import Tensor

from ppkt.models.sparse_unet import SR_UNET_LAYERS, build_sparse_unet
from ppkt.checkpoint import BACKBONE_FORMAT, CheckpointError, load_state_strict


def to_pointcept(export: Mapping) -> Dict:
    """A `ppkt-backbone` export -> {"state_dict": {"backbone.<name>": tensor}} for Pointcept's `weight=`."""
    state = OrderedDict((f"backbone.{k}", v) for k, v in export["state_dict"].items())
    from ppkt.provenance import stamp

    return {"state_dict": state, "meta": {"source": "ppkt", "arch": export["arch"], "channels": list(export["channels"]),
                                          "in_channels": export.get("in_channels", 3),
                                          "pretrain": dict(export.get("pretrain", {})), "exported_by": stamp()}}


def from_pointcept(checkpoint: Mapping, path: str | Path) -> Dict:
    """A Pointcept checkpoint holding a SpUNet-v1m1 backbone -> a `ppkt-backbone` export (classifier dropped)."""
    raw = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: no state_dict in this file")
    state: Dict[str, Tensor] = OrderedDict()
    for key, value in raw.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith("backbone.") and not key.startswith("backbone.final."):
            state[key[len("backbone."):]] = value
    if "conv_input.0.weight" not in state:
        raise CheckpointError(f"{path}: no SpUNet-v1m1 backbone found (expected keys backbone.conv_input.0.weight, ...)")
    layers, channels = _layout(state)
    arch = next((name for name, known in SR_UNET_LAYERS.items() if tuple(known) == layers), None)
    if arch is None:
        raise CheckpointError(f"{path}: blocks per stage {layers} match none of {dict(SR_UNET_LAYERS)}")
    in_channels = int(state["conv_input.0.weight"].shape[-1])
    load_state_strict(build_sparse_unet(arch, in_channels, channels), state, path, "SpUNet-v1m1 backbone")
    return {"format": BACKBONE_FORMAT, "arch": arch, "in_channels": in_channels, "channels": list(channels),
            "state_dict": state, "pretrain": {"imported_from": str(path)}}


def read_pointcept(path: str | Path) -> Dict:
    """from_pointcept of the checkpoint file at `path`, read without unpickling code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read it without unpickling code ({type(err).__name__})") from None
    return from_pointcept(checkpoint, path)


def _layout(state: Mapping[str, Tensor]) -> tuple:
    """(blocks per stage, channels) read off the keys and weight shapes (spconv weights are [out, k, k, k, in])."""
    blocks: Dict[tuple, set] = {}
    for key in state:
        m = re.match(r"(enc|dec)\.(\d)\.block(\d+)\.", key)
        if m:
            blocks.setdefault((m[1], int(m[2])), set()).add(int(m[3]))
    stages = 1 + max(s for _, s in blocks)
    layers = tuple(len(blocks[("enc", s)]) for s in range(stages)) + tuple(len(blocks[("dec", s)]) for s in reversed(range(stages)))
    channels = [int(state[f"down.{s}.0.weight"].shape[0]) for s in range(stages)]
    channels += [int(state[f"dec.{s}.block0.conv1.weight"].shape[0]) for s in reversed(range(stages))]
    return layers, channels
