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


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (mask.sum() + 1e-6)


def votenet_loss(out: Dict[str, Tensor], boxes: List[Tensor], mean_size: Tensor, num_heading_bins: int,
                 near: float = 0.3, far: float = 0.6) -> Dict[str, Tensor]:
    """The loss terms (scalars) of VoteNet's output `out` (see VoteNet.forward) against boxes[b] (K_b, 8)
    [cx, cy, cz, dx, dy, dz, heading, class]; "loss" is the weighted total."""
    terms: Dict[str, List[Tensor]] = {k: [] for k in ("vote", "objectness", "center", "heading_cls", "heading_reg",
                                                       "size_cls", "size_reg", "sem_cls")}
    zero = out["center"].sum() * 0.0
    weights = out["center"].new_tensor(OBJECTNESS_WEIGHTS)
    stats = {"positive": 0.0}
    for b, gt in enumerate(boxes):
        gt = gt.to(out["center"])
        seeds, votes = out["seed_xyz"][b], out["vote_xyz"][b]
        if len(gt) == 0:  # no object: every proposal is a negative, nothing else to learn here
            negative = torch.zeros(out["objectness"].shape[1], dtype=torch.long, device=gt.device)
            terms["objectness"].append(F.cross_entropy(out["objectness"][b], negative, weight=weights, reduction="none").mean())
            for k in terms:
                if k != "objectness":
                    terms[k].append(zero)
            continue
        holds = inside_boxes(seeds, gt)  # (S, K)
        vote_dist = (votes[:, None, :] - gt[None, :, :3]).abs().sum(2).masked_fill(~holds, 1e6).min(1).values
        terms["vote"].append(_masked_mean(vote_dist, holds.any(1)))
        dist = torch.cdist(out["aggregated_xyz"][b], gt[:, :3])  # (P, K)
        nearest, match = dist.min(1)
        positive, negative = nearest < near, nearest > far
        obj = F.cross_entropy(out["objectness"][b], positive.long(), weight=weights, reduction="none")  # weighted
        terms["objectness"].append(_masked_mean(obj, positive | negative))
        centre_d2 = torch.cdist(out["center"][b], gt[:, :3]) ** 2
        terms["center"].append(_masked_mean(centre_d2.min(1).values, positive) + centre_d2.min(0).values.mean())
        m = gt[match]  # (P, 8) the matched box of every proposal
        hbin, hres = angle_to_bin(m[:, 6], num_heading_bins)
        terms["heading_cls"].append(_masked_mean(F.cross_entropy(out["heading_scores"][b], hbin, reduction="none"), positive))
        pred_hres = out["heading_residuals_norm"][b].gather(1, hbin[:, None])[:, 0]
        terms["heading_reg"].append(_masked_mean(F.huber_loss(pred_hres, hres / (math.pi / num_heading_bins),
                                                              reduction="none", delta=1.0), positive))
        cls = m[:, 7].long()
        terms["size_cls"].append(_masked_mean(F.cross_entropy(out["size_scores"][b], cls, reduction="none"), positive))
        pred_sres = out["size_residuals_norm"][b][torch.arange(len(cls), device=cls.device), cls]  # (P, 3)
        target = (m[:, 3:6] - mean_size[cls]) / mean_size[cls]
        terms["size_reg"].append(_masked_mean(F.huber_loss(pred_sres, target, reduction="none", delta=1.0).mean(1), positive))
        terms["sem_cls"].append(_masked_mean(F.cross_entropy(out["sem_scores"][b], cls, reduction="none"), positive))
        stats["positive"] += float(positive.float().mean())
    t = {k: torch.stack(v).mean() for k, v in terms.items()}
    box = t["center"] + 0.1 * t["heading_cls"] + t["heading_reg"] + 0.1 * t["size_cls"] + t["size_reg"]
    total = 10 * (t["vote"] + 0.5 * t["objectness"] + box + 0.1 * t["sem_cls"])
    return {"loss": total, "box": box, **t, "positive_share": torch.tensor(stats["positive"] / len(boxes))}
