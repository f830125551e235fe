"""One optimisation step, as every training loop of ppkt takes it."""
from __future__ import annotations

import math
from typing import List, Optional

import torch

from ppkt.errors import Diverged


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler, iteration: int, hint: str,
                   scaler: Optional[torch.amp.GradScaler] = None) -> List[float]:
    """Stop on a non-finite loss (`Diverged` naming the iteration as the progress line counts it, 1-based, then
    `hint`), else backward, step (through `scaler` when given) and advance the schedule; returns the learning rate of
    each param group this step used."""
    if not math.isfinite(loss.item()):
        raise Diverged(f"iteration {iteration + 1}: the loss is {loss.item()}; {hint} (the checkpoints written so far "
                       "are kept)")
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    lrs = [group["lr"] for group in optimizer.param_groups]
    scheduler.step()
    return lrs
