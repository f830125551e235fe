"""The ablation runner (`make bench-ablations`): the paper's comparisons on the synthetic world, each a paired
difference with its 95 % interval, on the transfer benchmark's harness (`ppkt.benchmark.transfer`: the world,
pretraining and fine-tuning stages, results.json reuse, the convergence check of scratch).

A variant is one pretraining run (`VARIANTS`: a method of `loss.name`, or PPKT with one switch changed) or a scratch
baseline; every variant is fine-tuned in every cell with the same seeds, so any two variants of a seed are a pair
(same labelled selection, seed and data order). A table (`TABLES`) lists the differences it reports, a - b.
Inputs some variants need are stages of their own: `overlaps` (the overlapping frames of the training scenes, for
PointContrast) and `teacher2d` (a ResNet18-FCN trained on the rendered 2D labels of another world, seed
`TEACHER_WORLD_SEED`, for PPKD and PPNCE with the same teacher: as the paper's teacher was trained on another dataset,
it has seen no label of a scene that a few-label cell treats as unlabelled).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ppkt.benchmark.results import Results
from ppkt.train.run_dir import file_digest
from ppkt.benchmark.transfer import (STUDENT, Plan, finetune_job, provenance, run_jobs, stage_pretrain, stage_world)

WIDE = STUDENT  # the student of configs/*_synthetic.yaml; the ablation run's base student is half as wide
SEG_TEACHER = ("teacher.arch=resnet18", "teacher.stage=layer3")  # + teacher.weights=<the teacher2d stage's file>
TEACHER_WORLD_SEED = 2  # the 2D segmentation teacher's world: neither the benchmark's (0) nor its test world's (1)


@dataclass(frozen=True)
class Variant:
    key: str  # the init name of its fine-tuning runs and its pretraining folder
    title: str
    overrides: Tuple[str, ...] = ()  # over the benchmark's pretraining config
    pretrained: bool = True  # False: a scratch baseline
    channels: Optional[Tuple[int, ...]] = None  # the student's widths; None: the plan's
    needs: Tuple[str, ...] = ()  # "overlaps", "teacher2d": stages whose file it reads


VARIANTS = {v.key: v for v in (
    Variant("scratch", "scratch", pretrained=False),
    Variant("global_kd", "Global KD (pooled encoder, ImageNet logits)", ("loss.name=global_kd",)),
    Variant("gupta", "Gupta et al. (pooled L2)", ("loss.name=gupta",)),
    Variant("crd", "CRD (pooled contrastive, memory bank)", ("loss.name=crd", "loss.temperature=0.07")),
    Variant("pointcontrast", "PointContrast (two views, no 2D network)",
            ("loss.name=pointcontrast", "loss.temperature=0.07"), needs=("overlaps",)),
    Variant("ppkd", "PPKD (2D segmentation teacher)", ("loss.name=ppkd", *SEG_TEACHER), needs=("teacher2d",)),
    Variant("ppnce", "PPKT (PPNCE, UPL, ImageNet EfficientNet-Lite0)"),
    Variant("pl", "PPKT with PL (no upsampling)", ("loss.projection=pl",)),
    Variant("ppnce_seg", "PPKT with the 2D segmentation teacher", SEG_TEACHER, needs=("teacher2d",)),
    Variant("ppnce_wide", "PPKT, wide student", channels=WIDE),
    Variant("scratch_wide", "scratch, wide student", pretrained=False, channels=WIDE),
)}


@dataclass(frozen=True)
class Table:
    title: str
    rows: Tuple[Tuple[str, str, str], ...]  # (a, b, the paper's finding): the difference a - b; "helps" / "no gain"
    paper: str  # what the paper reports for it


TABLES = (
    Table("Pretraining methods (paper Tables 1-3)",
          (("global_kd", "scratch", "no gain"), ("gupta", "scratch", "no gain"), ("crd", "scratch", "no gain"),
           ("pointcontrast", "scratch", "helps"), ("ppkd", "scratch", "helps"), ("ppnce", "scratch", "helps")),
          "Paper, S3DIS mIoU over scratch (Table 1): Global KD +1.40, Gupta -0.77, CRD +0.49, PointContrast +1.70, "
          "PPKT +3.12; in its words the frame-level methods bring no improvement and pixel-to-point does (PPKD over "
          "scratch: Table 5)."),
    Table("Upsampling projection (UPL) vs plain projection (PL)", (("ppnce", "pl", "helps"), ("pl", "scratch", "helps")),
          "Paper: UPL is proposed to restore the resolution of the teacher's features (Section 3.3); it gives no "
          "separate number."),
    Table("PPNCE vs PPKD with the same 2D segmentation teacher (paper Table 5)",
          (("ppnce_seg", "ppkd", "helps"), ("ppkd", "scratch", "helps"), ("ppnce_seg", "scratch", "helps")),
          "Paper, SUN RGB-D mAP@0.25 (Table 5): PPNCE 58.03 vs PPKD 56.07 (+1.96), both over scratch 55.21."),
    Table("Student size (paper Table 4)", (("ppnce", "scratch", "helps"), ("ppnce_wide", "scratch_wide", "helps")),
          "Paper, S3DIS mIoU (Table 4): +1.73 on SR-UNet18, +3.12 on SR-UNet34: the larger student gains more."),
)


@dataclass
class AblationPlan(Plan):
    """The transfer benchmark's plan, plus what the ablations run."""

    variants: Sequence[str] = tuple(VARIANTS)
    teacher2d_iterations: int = 300
    min_overlap: float = 0.3


def stage_overlaps(plan: AblationPlan, results: Results, world: Path) -> Path:
    """overlaps.tsv: the overlapping frames of every training scene's frames (`ppkt overlaps`, folders by scene)."""
    from ppkt.data.frames import open_frame_folder
    from ppkt.data.overlap import mine_folder, write_overlaps

    out = plan.out / "overlaps.tsv"
    settings = {"world": file_digest(world / "dataset.json"), "min_overlap": plan.min_overlap, "voxel": 0.05,
                "radius": 0.075}

    def work() -> dict:
        t, pairs = time.perf_counter(), []
        for name in (world / "splits" / "train.txt").read_text().split():
            pairs += mine_folder(open_frame_folder(world / "frames" / name, max_depth=8.0), name, plan.min_overlap,
                                 0.05, 0.075, lambda n: None)[0]
        write_overlaps(out, pairs)
        return {"overlaps": len(pairs), **provenance(time.perf_counter() - t)}

    if not out.is_file():
        results.records.pop("overlaps", None)
    results.run("overlaps", settings, work, stage="overlaps")
    return out


def stage_teacher2d(plan: AblationPlan, results: Results) -> Path:
    """teacher2d.pt: a ResNet18-FCN trained on the rendered 2D labels (`ppkt teacher train`) of the teacher's own world
    (record "world_teacher": the benchmark world's size, seed TEACHER_WORLD_SEED)."""
    from ppkt.train.teacher2d import train_teacher2d

    world = stage_world(plan, results, "world_teacher", TEACHER_WORLD_SEED)
    out = plan.out / "teacher2d.pt"
    settings = {"world": file_digest(world / "dataset.json"), "arch": "resnet18", "iterations": plan.teacher2d_iterations,
                "seed": 0}

    def work() -> dict:
        import torch

        t = time.perf_counter()
        torch.set_num_threads(plan.threads)
        done = train_teacher2d(world, out, arch="resnet18", iterations=plan.teacher2d_iterations, seed=0,
                               device="cpu", progress=False, overwrite=True)
        return {"val": done.get("val"), **provenance(time.perf_counter() - t)}

    if not out.is_file():
        results.records.pop("teacher2d", None)
    results.run("teacher2d", settings, work, stage="teacher2d")
    return out


def stage_variants(plan: AblationPlan, results: Results, world: Path) -> Dict[str, Optional[Path]]:
    """The backbone export of every pretrained variant (None for the scratch ones)."""
    variants = [VARIANTS[k] for k in plan.variants]
    needs = {n for v in variants for n in v.needs}
    files = {"overlaps": stage_overlaps(plan, results, world) if "overlaps" in needs else None,
             "teacher2d": stage_teacher2d(plan, results) if "teacher2d" in needs else None}
    backbones: Dict[str, Optional[Path]] = {}
    for v in variants:
        if not v.pretrained:
            backbones[v.key] = None
            continue
        extra = [f"data.overlaps={files['overlaps']}", f"data.roots=[{world / 'frames'}]"] if "overlaps" in v.needs else []
        extra += [f"teacher.weights={files['teacher2d']}"] if "teacher2d" in v.needs else []
        print(f"pretraining: {v.key} ({v.title})", flush=True)
        backbones[v.key] = stage_pretrain(plan_for(plan, v), results, world, v.key, (*v.overrides, *extra),
                                          {n: files[n] for n in v.needs})
    return backbones


def plan_for(plan: AblationPlan, variant: Variant) -> AblationPlan:
    """The plan with the variant's student widths."""
    return dataclasses.replace(plan, channels=variant.channels or plan.channels)


def stage_finetune(plan: AblationPlan, results: Results, world: Path, backbones: Dict[str, Optional[Path]]) -> None:
    todo = [job for cell in plan.cells for seed in range(plan.seeds) for key, weights in backbones.items()
            for job in finetune_job(plan_for(plan, VARIANTS[key]), results, world, cell, seed, key, weights)]
    if todo:
        print(f"fine-tuning: {len(todo)} runs to do, {plan.jobs} at a time", flush=True)
        run_jobs(plan, results, todo)


def run(plan: AblationPlan) -> Results:
    """Every stage (each resumable); returns the results (also in plan.out / results.json)."""
    unknown = sorted(set(plan.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    plan.out.mkdir(parents=True, exist_ok=True)
    results = Results(plan.out / "results.json")
    world = stage_world(plan, results)
    backbones = stage_variants(plan, results, world)
    stage_finetune(plan, results, world, backbones)
    return results


def tables_for(variants: Sequence[str]) -> List[Table]:
    """The tables (with only their rows) whose variants were all run."""
    have, out = set(variants), []
    for t in TABLES:
        rows = tuple(r for r in t.rows if {r[0], r[1]} <= have)
        if rows:
            out.append(dataclasses.replace(t, rows=rows))
    return out
