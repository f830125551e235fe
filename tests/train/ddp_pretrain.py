"""Run under torchrun by test_distributed.py: `ppkt pretrain` in this process, then save this process's weights.

    torchrun --nproc_per_node=2 tests/train/ddp_pretrain.py OUT_FILE_PREFIX CONFIG [key=value ...]

Each process writes OUT_FILE_PREFIX<rank>.pt: the parameters and the state dict of the student, g2D and g3D it
ended with.
"""
import os
import sys

import torch

import ppkt.train.pretrain as pretraining
from ppkt.config import load_config


def main() -> None:
    prefix, config, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    built = []
    build_model = pretraining.build_model
    pretraining.build_model = lambda cfg: built.append(build_model(cfg)) or built[-1]  # keep a handle on the model
    pretraining.pretrain(load_config(config, overrides))
    modules = pretraining.trainable(built[0])
    torch.save({"parameters": {k: v.detach() for k, v in modules.named_parameters()}, "state": modules.state_dict()},
               f"{prefix}{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main()
