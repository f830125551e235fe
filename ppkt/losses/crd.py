"""Contrastive representation distillation (CRD, Tian et al., 2020; the paper's Table 1 baseline) between the global
3D embedding of a sample and the global 2D embedding of its frame.

    L = -(1 / B) sum_b log( exp(u_b . w_b / tau) / ( sum_j exp(u_b . w_j / tau) + sum_k exp(u_b . m_k / tau) ) )

u (B, E): the student's pooled encoder features projected and L2-normalised; w (B, E): the teacher's, the same way;
negatives: the other frames of the batch (w_j, j != b) and a memory bank m (K, E) of earlier batches' w. E = 128 and
tau = 0.07 by default. The bank is a first-in first-out queue, a buffer of the module (so it is checkpointed and a
resumed run continues exactly); it starts empty.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ppkt.losses.ppnce import infonce


class CRDLoss(nn.Module):
    def __init__(self, embed_dim: int = 128, bank_size: int = 4096, temperature: float = 0.07):
        super().__init__()
        if bank_size < 0 or not temperature > 0:
            raise ValueError(f"CRDLoss: bank_size must be >= 0 and temperature > 0, got {bank_size}, {temperature}")
        self.temperature = temperature
        self.register_buffer("bank", torch.zeros(bank_size, embed_dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows of the bank in use
        self.register_buffer("head", torch.zeros((), dtype=torch.long))  # the next row to overwrite

    def forward(self, u: Tensor, w: Tensor) -> Tensor:
        """u, w (B, E) L2-normalised -> scalar loss; then w (detached) enters the bank."""
        if u.shape != w.shape or u.ndim != 2 or u.shape[1] != self.bank.shape[1]:
            raise ValueError(f"CRDLoss: u {tuple(u.shape)} and w {tuple(w.shape)} must both be (B, {self.bank.shape[1]})")
        candidates = torch.cat([w, self.bank[: int(self.filled)].to(w.dtype)])
        loss = infonce(u, candidates, torch.arange(u.shape[0], device=u.device), self.temperature).mean()
        self.enqueue(w.detach())
        return loss

    @torch.no_grad()
    def enqueue(self, w: Tensor) -> None:
        size = self.bank.shape[0]
        if size == 0:
            return
        w = w[-size:]  # a batch larger than the bank keeps its last rows
        rows = (int(self.head) + torch.arange(w.shape[0])) % size
        self.bank[rows.to(self.bank.device)] = w.to(self.bank.dtype)
        self.head.fill_((int(self.head) + w.shape[0]) % size)
        self.filled.fill_(min(size, int(self.filled) + w.shape[0]))
