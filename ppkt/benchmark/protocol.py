"""A confirmatory benchmark's protocol: every setting, the cells, the pairs per cell and the analysis, fixed in a
YAML file that is committed before the run that reports (configs/protocols/*.yaml).

`status: draft` allows only the tuning stages (learning curves and pilot on val); `status: fixed` (with every cell's
budget and pairs set) allows the confirmatory run on the test world, which records the commit of the protocol file
and refuses a file with uncommitted changes.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from ppkt.errors import UserError


@dataclass
class CellProtocol:
    key: str  # "probe" | "full" | "f<fraction>" (stratified scene fraction) | "p<k>" (k labelled points per scene)
    curve: List[int] = field(default_factory=list)  # budgets measured on val (B, 2B, 4B, ...), iterations
    budget: int = 0  # iterations of the confirmatory runs (0: not fixed yet)
    pairs: int = 0  # confirmatory pairs (0: not fixed yet)
    plateau: bool = False  # the curve showed `budget` at the plateau (else the verdict is about this budget only)
    why: str = ""  # how budget and pairs were chosen (the curve's numbers, the pilot sd)


@dataclass
class Protocol:
    name: str = "segmentation"
    task: str = "segmentation"  # "segmentation" (mIoU) | "detection" (VoteNet, mAP@0.25 and mAP@0.5)
    status: str = "draft"  # "draft" | "fixed"
    margin: float = 2.0  # points: "no effect larger than ±margin" needs the whole interval inside ±margin
    confidence: float = 0.95
    half_width: float = 2.0  # points: the interval half-width Stein's rule sizes the pairs for
    plateau_gain: float = 1.0  # points: doubling the budget changes scratch's mean val mIoU by less -> plateau
    world_seed: int = 0  # the world: train + val scenes (and their frames)
    scenes: int = 120
    frames_per_scene: int = 8
    point_spacing: float = 0.025  # metres
    test_seed: int = 1  # the test world: another seed, scenes test_xxxx, no frames
    test_scenes: int = 40
    student: List[int] = field(default_factory=lambda: [16, 32, 64, 128, 128, 64, 48, 48])
    pretrain_runs: int = 4  # independent PPKT runs (train.seed 0..K-1); confirmatory pair i uses run i mod K
    pretrain_iterations: int = 600
    # over the task's fine-tuning config (configs/finetune_synthetic.yaml, configs/detection_synthetic.yaml)
    recipe: List[str] = field(default_factory=lambda: [
        "optim.name=adamw", "optim.lr=0.005", "optim.weight_decay=0.01", "optim.schedule=cosine"])
    probe_recipe: List[str] = field(default_factory=lambda: [
        "optim.name=sgd", "optim.lr=0.1", "optim.weight_decay=0.0001"])
    max_voxels: int = 8000  # training crop per scene
    curve_seeds: int = 2  # seeds of each budget of a learning curve (val)
    pilot_pairs: int = 4  # pairs on val at a cell's chosen budget; their sd fixes the confirmatory pairs (Stein)
    first_seed: int = 1000  # confirmatory pair i: fine-tuning seed first_seed + i (the curves use 0, 1, ...)
    jobs: int = 2  # fine-tuning runs at once
    threads: int = 2  # CPU threads in all
    cells: List[CellProtocol] = field(default_factory=list)
    # detection: before any comparison the detector must fit `overfit_scenes` training scenes, trained and scored on
    # them without augmentation: mAP@0.25 >= 0.90 and mAP@0.5 >= 0.70 within overfit_iterations (checked every
    # overfit_eval_every)
    overfit_scenes: int = 4
    overfit_iterations: int = 1500
    overfit_eval_every: int = 250


def load_protocol(path: str | Path) -> Protocol:
    """The protocol of a YAML file (unknown keys and wrong types are errors naming the file)."""
    from ppkt.config import load_config

    p = load_config(path, (), Protocol)
    problems = [f"status must be draft or fixed, got {p.status!r}"] if p.status not in ("draft", "fixed") else []
    if p.task not in ("segmentation", "detection"):
        problems.append(f"task must be segmentation or detection, got {p.task!r}")
    if p.pretrain_runs < 1 or not p.cells:
        problems.append("needs pretrain_runs >= 1 and at least one cell")
    keys = [c.key for c in p.cells]
    if len(set(keys)) != len(keys):
        problems.append(f"cell keys repeat: {keys}")
    for c in p.cells:
        if p.task == "detection" and not (c.key == "full" or c.key[:1] == "f"):
            problems.append(f"cell {c.key!r}: detection cells are full or f<fraction>")
        elif not (c.key in ("probe", "full") or c.key[:1] in ("f", "p")):
            problems.append(f"cell {c.key!r}: use probe, full, f<fraction> or p<points>")
        if p.status == "fixed" and (c.budget < 1 or c.pairs < 2):
            problems.append(f"cell {c.key}: a fixed protocol needs budget >= 1 and pairs >= 2 (got {c.budget}, {c.pairs})")
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))
    return p


def committed_version(path: str | Path) -> str:
    """The commit that last changed `path`; UserError when the file is not committed or has uncommitted changes."""
    path = Path(path).resolve()
    run = lambda *args: subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True)  # noqa: E731
    status = run("status", "--porcelain", "--", str(path))
    commit = run("log", "-1", "--format=%H", "--", str(path)).stdout.strip()
    if status.returncode != 0 or status.stdout.strip() or not commit:
        raise UserError(f"{path}: the protocol must be committed, unchanged, before the confirmatory run "
                        "(git add + git commit it first)")
    return commit

