"""Run under torchrun by test_distributed.py: the gathered loss on fixed embeddings, then a list of `ppkt pretrain`
runs in these processes, each saving what this process ended with.

    torchrun --nproc_per_node=2 tests/train/ddp_pretrain.py OUT_FOLDER RUNS_JSON

RUNS_JSON: a list of {"name", "config", "overrides": [key=value, ...], "resume": bool, "processes": 1 | 2,
"no_bn": bool}. The runs share one process group (created here; creating a group again in the same launch races on
torchrun's store). A run with "processes": 1 is a 1-process run of process 0 alone (WORLD_SIZE=1, after the group is
closed; process 1 skips it and may exit): list those last. "no_bn" replaces the student's BatchNorm layers by
identities (per-process batch statistics are the one thing that makes a 2-process forward differ from a 1-process
one over the same frames).

Writes OUT_FOLDER/loss_formula.rank<r>.pt (inputs, loss and gradients of `gathered_ppnce_loss` in process r, which holds
3 + 2r pairs) and OUT_FOLDER/<name>.rank<r>.pt per run: the parameters and state dict of the student, g2D and g3D it
ended with, its initial parameters, and the loss of every iteration it ran.
"""
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import ppkt.train.distributed as distributed
import ppkt.train.pretrain as pretraining
from ppkt.config import load_config
from ppkt.losses.gathered import gathered_ppnce_loss
from ppkt.models.ppkt import PPKT

TAU = 0.1


def gathered_loss(out: Path) -> None:
    """gathered_ppnce_loss of float64 embeddings: process r holds 3 + 2r pairs, drawn from seed 0 for all ranks."""
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    pairs = [(F.normalize(torch.randn(3 + 2 * r, 8, generator=g, dtype=torch.float64), dim=1),
              F.normalize(torch.randn(3 + 2 * r, 8, generator=g, dtype=torch.float64), dim=1)) for r in range(world)]
    z3d, z2d = (t.clone().requires_grad_(True) for t in pairs[rank])
    loss = gathered_ppnce_loss(z3d, z2d, TAU)
    loss.backward()
    torch.save({"z3d": z3d.detach(), "z2d": z2d.detach(), "loss": loss.detach(), "grad_z3d": z3d.grad,
                "grad_z2d": z2d.grad, "world": world, "tau": TAU}, out / f"loss_formula.rank{rank}.pt")


def without_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.Identity())
        else:
            without_batchnorm(child)


def main() -> None:
    out, runs = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo")  # ppkt joins it (init_distributed) and leaves it open (cleanup, below)
    distributed.cleanup = lambda: None
    pretraining.plot_loss_curve = lambda *args, **kwargs: None  # 1 s a run; test_pretrain checks the curve
    gathered_loss(out)
    built, losses = [], []
    build_model, forward = pretraining.build_model, PPKT.forward
    PPKT.forward = lambda self, batch, generator: losses.append(forward(self, batch, generator)) or losses[-1]
    for run in runs:
        if run.get("processes", 2) == 1:
            if dist.is_initialized():
                dist.destroy_process_group()
            if rank != 0:
                continue
            os.environ["WORLD_SIZE"] = "1"  # torchrun's process 0 alone: a plain 1-process run
        built.clear(), losses.clear()
        initial = {}

        def build(cfg, no_bn=run.get("no_bn", False)):
            model = build_model(cfg)
            if no_bn:
                without_batchnorm(model.student)
            built.append(model)
            initial.update({k: v.detach().clone() for k, v in pretraining.trainable(model).named_parameters()})
            return model

        pretraining.build_model = build
        pretraining.pretrain(load_config(run["config"], run["overrides"]), resume=run.get("resume", False))
        modules = pretraining.trainable(built[0])
        torch.save({"parameters": {k: v.detach() for k, v in modules.named_parameters()}, "state": modules.state_dict(),
                    "initial": initial, "losses": [loss.item() for loss in losses]}, out / f"{run['name']}.rank{rank}.pt")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
