"""VoteNet's training loss on a batch of proposals (Qi et al. 2019, Section 3 and its code's weights).

    L = 10 * (L_vote + 0.5 L_obj + L_box + 0.1 L_sem),  L_box = L_center + 0.1 L_hcls + L_hres + 0.1 L_scls + L_sres

- L_vote: mean over the seeds inside at least one ground-truth box of min_k |vote - centre_k|_1 over the boxes k
  holding the seed.
- L_obj: cross-entropy of objectness, class weights (0.2, 0.8); a proposal (its aggregated vote position) is
  positive within `near` (0.3 m) of a ground-truth centre, negative beyond `far` (0.6 m), ignored between.
- L_center: mean over positive proposals of the squared distance of the predicted centre to the nearest
  ground-truth centre, plus mean over ground-truth boxes of the squared distance to the nearest predicted centre.
- Over the positive proposals, each matched to its nearest ground-truth centre: heading bin cross-entropy and the
  Huber loss (delta 1) of the normalised heading residual of the true bin; size class (= object class)
  cross-entropy and Huber loss of the size residual divided by the class's mean size; class cross-entropy.
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

from ppkt.detection.coder import angle_to_bin

OBJECTNESS_WEIGHTS = (0.2, 0.8)


def inside_boxes(points: Tensor, boxes: Tensor) -> Tensor:
    """(N, K) bool: point n lies in oriented box k; points (N, 3), boxes (K, >= 7)."""
    d = points[:, None, :] - boxes[None, :, :3]
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    local = torch.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], dim=2)
    return (local.abs() <= boxes[None, :, 3:6] / 2).all(dim=2)


class _Sums:
    """Masked sums and their counts over the scenes of a batch: VoteNet divides by the batch-wide count, so a crop
    without positives adds nothing instead of diluting the mean."""

    def __init__(self, like: Tensor):
        self.zero = like.sum() * 0.0
        self.num: Dict[str, Tensor] = {}
        self.den: Dict[str, float] = {}

    def add(self, key: str, values: Tensor, mask: Tensor) -> None:
        mask = mask.to(values.dtype)
        self.num[key] = self.num.get(key, self.zero) + (values * mask).sum()
        self.den[key] = self.den.get(key, 0.0) + float(mask.sum())

    def mean(self, key: str) -> Tensor:
        return self.num.get(key, self.zero) / (self.den.get(key, 0.0) + 1e-6)


def box_heading(heading: Tensor, num_heading_bins: int) -> Tensor:
    """The heading target: with one bin (axis-aligned boxes, ScanNet) the angle modulo pi in [-pi/2, pi/2) -- a box
    turned by pi is the same box, and a flipped heading-0 box (heading pi) must not ask for a residual of +-pi."""
    if num_heading_bins != 1:
        return heading
    return torch.remainder(heading + math.pi / 2, math.pi) - math.pi / 2


def votenet_loss(out: Dict[str, Tensor], boxes: List[Tensor], mean_size: Tensor, num_heading_bins: int,
                 near: float = 0.3, far: float = 0.6) -> Dict[str, Tensor]:
    """The loss terms (scalars) of VoteNet's output `out` (see VoteNet.forward) against boxes[b] (K_b, 8)
    [cx, cy, cz, dx, dy, dz, heading, class]; "loss" is the weighted total. Every term is a masked mean over the
    whole batch (VoteNet's normalisation)."""
    sums = _Sums(out["center"])
    weights = out["center"].new_tensor(OBJECTNESS_WEIGHTS)
    positives = 0.0
    for b, gt in enumerate(boxes):
        gt = gt.to(out["center"])
        logits = out["objectness"][b]
        if len(gt) == 0:  # no object: every proposal is a negative, nothing else to learn here
            negative = torch.zeros(logits.shape[0], dtype=torch.long, device=gt.device)
            sums.add("objectness", F.cross_entropy(logits, negative, weight=weights, reduction="none"),
                     torch.ones_like(negative, dtype=torch.bool))
            continue
        holds = inside_boxes(out["seed_xyz"][b], gt)  # (S, K)
        vote_dist = (out["vote_xyz"][b][:, None, :] - gt[None, :, :3]).abs().sum(2).masked_fill(~holds, 1e6).min(1).values
        sums.add("vote", vote_dist, holds.any(1))
        nearest, match = torch.cdist(out["aggregated_xyz"][b], gt[:, :3]).min(1)  # (P,) each proposal's nearest centre
        positive, negative = nearest < near, nearest > far
        sums.add("objectness", F.cross_entropy(logits, positive.long(), weight=weights, reduction="none"),
                 positive | negative)  # cross_entropy(weight=...) with reduction none: each term times its class weight
        centre_d2 = torch.cdist(out["center"][b], gt[:, :3]) ** 2
        sums.add("center_pred", centre_d2.min(1).values, positive)
        sums.add("center_true", centre_d2.min(0).values, torch.ones(len(gt), dtype=torch.bool, device=gt.device))
        m = gt[match]  # (P, 8) the matched box of every proposal
        hbin, hres = angle_to_bin(box_heading(m[:, 6], num_heading_bins), num_heading_bins)
        sums.add("heading_cls", F.cross_entropy(out["heading_scores"][b], hbin, reduction="none"), positive)
        pred_hres = out["heading_residuals_norm"][b].gather(1, hbin[:, None])[:, 0]
        sums.add("heading_reg", F.huber_loss(pred_hres, hres / (math.pi / num_heading_bins), reduction="none", delta=1.0),
                 positive)
        cls = m[:, 7].long()
        sums.add("size_cls", F.cross_entropy(out["size_scores"][b], cls, reduction="none"), positive)
        pred_sres = out["size_residuals_norm"][b][torch.arange(len(cls), device=cls.device), cls]  # (P, 3)
        target = (m[:, 3:6] - mean_size[cls]) / mean_size[cls]
        sums.add("size_reg", F.huber_loss(pred_sres, target, reduction="none", delta=1.0).mean(1), positive)
        sums.add("sem_cls", F.cross_entropy(out["sem_scores"][b], cls, reduction="none"), positive)
        positives += float(positive.float().mean())
    t = {k: sums.mean(k) for k in ("vote", "objectness", "heading_cls", "heading_reg", "size_cls", "size_reg", "sem_cls")}
    t["center"] = sums.mean("center_pred") + sums.mean("center_true")
    box = t["center"] + 0.1 * t["heading_cls"] + t["heading_reg"] + 0.1 * t["size_cls"] + t["size_reg"]
    total = 10 * (t["vote"] + 0.5 * t["objectness"] + box + 0.1 * t["sem_cls"])
    return {"loss": total, "box": box, **t, "positive_share": torch.tensor(positives / len(boxes))}
