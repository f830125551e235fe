"""PPNCE with negatives from every process (`loss.gather_negatives`): each process's points are contrasted with the
sampled pixels of all processes, so the number of negatives grows with the number of processes (GPUs)."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ppkt.losses.ppnce import infonce, ppnce_loss


def world_size() -> int:
    """Processes of the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherRows(torch.autograd.Function):
    """(n_r, E) on process r -> (N, E), the rows of every process in rank order (N = sum of n_r; n_r may differ).

    Backward: the gradient of the local rows is the SUM over processes of the gradients each process's loss put on
    them (an all-reduce of the (N, E) gradient, then this process's slice), i.e. d(sum_r L_r) / d(local rows).
    """

    @staticmethod
    def forward(ctx, x: Tensor, sizes: List[int], offset: int) -> Tensor:
        ctx.rows = (offset, x.shape[0])
        padded = x.new_zeros((max(sizes), x.shape[1]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        offset, n = ctx.rows
        return grad[offset: offset + n], None, None


def gather_rows(x: Tensor) -> Tuple[Tensor, int]:
    """All processes' rows (N, E) in rank order (differentiable, see `_GatherRows`) and the offset of this process's."""
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
    sizes = [int(s) for s in sizes]
    offset = sum(sizes[: dist.get_rank()])
    return _GatherRows.apply(x.contiguous(), sizes, offset), offset


def gathered_ppnce_loss(z3d: Tensor, z2d: Tensor, temperature: float = 0.04) -> Tensor:
    """PPNCE of this process's n_r pairs against the pixels of all W processes (a collective: all processes call it).

    z3d, z2d: (n_r, E) unit embeddings of process r's pairs. With Z = [z2d_0; ...; z2d_{W-1}] (N = sum_r n_r rows,
    rank order) and o_r = n_0 + ... + n_{r-1}:

        L_r = (W / N) sum_{i < n_r} -log( exp(z3d_r,i . Z_{o_r+i} / tau) / sum_{j < N} exp(z3d_r,i . Z_j / tau) )

    so that mean_r L_r = ppnce_loss([z3d_0; ...; z3d_{W-1}], Z): the 1-process loss over the same N pairs (the mean
    over all points of InfoNCE against all pixels). DistributedDataParallel averages the processes' gradients, and
    the gather's backward sends each process the gradient every loss put on its pixels, so the averaged gradient is
    that of the 1-process loss too. With equal n_r, L_r is the mean over this process's points. One process (or no
    process group): ppnce_loss.
    """
    w = world_size()
    if w == 1:
        return ppnce_loss(z3d, z2d, temperature)
    if z3d.shape != z2d.shape or z3d.ndim != 2:
        raise ValueError(f"gathered_ppnce_loss: z3d {tuple(z3d.shape)} and z2d {tuple(z2d.shape)} must both be (n, E)")
    all_z2d, offset = gather_rows(z2d)
    positive = torch.arange(offset, offset + z3d.shape[0], device=z3d.device)
    return infonce(z3d, all_z2d, positive, temperature).sum() * (w / all_z2d.shape[0])
