"""The confirmatory benchmarks (segmentation and detection): tuned on val, fixed in a committed protocol, reported
on a test world.

Stages (records of <out>/results.json, each resumable; `ppkt.benchmark.protocol` holds the settings):
1. worlds: the world (train + val scenes with their RGB-D frames, seed `world_seed`) and the test world (seed
   `test_seed`, scenes test_xxxx, no frames: no pretraining run can see them, and no tuning stage is given its path);
2. pretrain: `pretrain_runs` independent PPKT runs (train.seed 0..K-1) on the frames of the training scenes;
3. curves (tuning, val only): per cell, scratch and PPKT at each budget of the cell's curve, `curve_seeds` seeds
   each (seed s: the backbone of pretraining run s mod K), whole runs of each length; `plateau` reads off the budget
   where doubling changes scratch's mean val mIoU by less than `plateau_gain`. The pilot is the same at the cell's
   chosen budget with `pilot_pairs` seeds: its sd of the paired differences sizes the confirmatory pairs (Stein);
4. confirm (test; only with a fixed, committed protocol): per cell `pairs` pairs at `budget`; pair i has fine-tuning
   seed first_seed + i and the backbone of pretraining run i mod K; every run is scored on the test world;
5. floors (segmentation): the lookup table and the k-nearest-neighbour classifier (`ppkt.benchmark.floor`), fitted
   on the labelled points of a cell's pairs and scored on the test world.
The protocol's `task` picks the fine-tuning (`TASKS`): semantic segmentation scored by mIoU, or VoteNet detection
scored by mAP@0.25 (and mAP@0.5 beside it).
The analysis (`summary`): per cell the mean paired difference PPKT - scratch on the test world, its interval over
pretraining runs (`stats.clustered_interval`: the pairs of one pretraining run form one cluster, so another
pretraining run's spread is inside the interval; with one pair per run it is the paired t-interval), and the verdict
against the protocol's margin.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from statistics import mean, stdev
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ppkt.benchmark.protocol import CellProtocol, Protocol, committed_version
from ppkt.benchmark.results import Results
from ppkt.benchmark.transfer import (FULL, Cell, Plan, finetune_config, finetune_job, limited_points, provenance,
                                     run_finetune, run_jobs, scene_fraction, stage_pretrain, stage_world)
from ppkt.errors import RunFailed, UserError

TEST_WORLD = "world_test"


def plan_of(protocol: Protocol, out: Path) -> Plan:
    """The transfer benchmark's Plan with the protocol's settings (iterations are set per cell and budget)."""
    return Plan(out=Path(out), cells=[cell_of(protocol, c) for c in protocol.cells], seeds=0, scenes=protocol.scenes,
                frames_per_scene=protocol.frames_per_scene, point_spacing=protocol.point_spacing,
                pretrain_iterations=protocol.pretrain_iterations, finetune_iterations=0, probe_iterations=0,
                max_voxels=protocol.max_voxels, jobs=protocol.jobs, threads=protocol.threads,
                finetune_overrides=tuple(protocol.recipe), channels=tuple(protocol.student))


def cell_of(protocol: Protocol, spec: CellProtocol) -> Cell:
    if protocol.task == "detection":
        if spec.key == "full":
            return Cell("full", "detection, all labels", (), 1.0)
        fraction = float(spec.key[1:])
        return Cell(spec.key, f"detection, {100 * fraction:g} % of the scenes", (f"data.label_fraction={fraction}",),
                    fraction)
    if spec.key == "probe":
        return Cell("probe", "linear probe (frozen backbone), all labels",
                    ("model.freeze_backbone=true", *protocol.probe_recipe), 2.0)
    if spec.key == "full":
        return Cell(FULL.key, "all labels", FULL.overrides, FULL.labels)
    if spec.key.startswith("f"):
        return scene_fraction(float(spec.key[1:]))
    return limited_points(int(spec.key[1:]))


def at_budget(plan: Plan, budget: int) -> Plan:
    return replace(plan, finetune_iterations=budget, probe_iterations=budget)


def run_config(plan: Plan, world: Path, cell: Cell, seed: int, backbone: Optional[Path], init: str = ""):
    """`transfer.finetune_config` evaluated on val once, at the end (the budget is the plan's)."""
    cfg = finetune_config(plan, world, cell, seed, backbone, init)
    cfg.train.eval_every = 0
    return cfg


def detection_run_config(plan: Plan, world: Path, cell: Cell, seed: int, backbone: Optional[Path], init: str = ""):
    """`detection.detection_config` evaluated on val once, at the end, in the run folder finetune/<cell>/<init>_s<seed>."""
    from ppkt.benchmark.detection import detection_config

    cfg = detection_config(plan, world, cell, seed, backbone, init or ("ppkt" if backbone else "scratch"))
    cfg.train.eval_every = 0
    cfg.train.out_dir = str(plan.out / "finetune" / cell.key / Path(cfg.train.out_dir).name)
    return cfg


def run_scored(cfg, test_world: Optional[str] = None) -> dict:
    """Fine-tune from nothing (`transfer.run_finetune`: val mIoU as "miou") and, with `test_world`, score the final
    model on its "test" split ("test_miou")."""
    from ppkt.train.evaluate import evaluate_checkpoint

    t = time.perf_counter()
    scores = run_finetune(cfg)
    if test_world is not None:
        out = Path(cfg.train.out_dir)
        test = evaluate_checkpoint(out / "checkpoints" / "last.pt", test_world, "test", out / "eval_test", "cpu", 0, False)
        scores["test_miou"] = test["miou"]
    return {**scores, **provenance(time.perf_counter() - t)}


def run_detection_scored(cfg, test_world: Optional[str] = None) -> dict:
    """Fine-tune a detector from nothing (`detection.run_detection`: val "map25", "map50") and, with `test_world`,
    score the final model on its "test" split ("test_map25", "test_map50")."""
    from ppkt.benchmark.detection import run_detection
    from ppkt.train.detect import evaluate_detection_checkpoint

    t = time.perf_counter()
    scores = run_detection(cfg)
    if test_world is not None:
        out = Path(cfg.train.out_dir)
        test = evaluate_detection_checkpoint(out / "checkpoints" / "last.pt", test_world, "test", out / "eval_test",
                                             "cpu", False)
        scores.update(test_map25=test["mAP@0.25"], test_map50=test["mAP@0.5"])
    return {**scores, **provenance(time.perf_counter() - t)}


@dataclass(frozen=True)
class Task:
    """What a benchmark fine-tunes: the run config (plan, world, cell, seed, backbone, init), the worker
    (config, test_world) -> scores, the val score of its records and the test scores it reports (first: the verdict's)."""

    config: Callable
    worker: Callable
    val_score: str
    test_scores: Tuple[str, ...]
    score_name: Tuple[str, ...]


TASKS = {"segmentation": Task(run_config, run_scored, "miou", ("test_miou",), ("mIoU",)),
         "detection": Task(detection_run_config, run_detection_scored, "map25", ("test_map25", "test_map50"),
                           ("mAP@0.25", "mAP@0.5"))}


# ----------------------------------------------------------------------------------------------------- stages
def stage_worlds(plan: Plan, protocol: Protocol, results: Results) -> tuple:
    world = stage_world(plan, results, "world", protocol.world_seed)
    test = stage_world(plan, results, TEST_WORLD, protocol.test_seed, test=True, scenes=protocol.test_scenes)
    return world, test


def stage_pretrains(plan: Plan, protocol: Protocol, results: Results, world: Path) -> List[Path]:
    """The backbones of pretraining runs 0..K-1 (records pretrain/ppkt<k>)."""
    return [stage_pretrain(plan, results, world, f"ppkt{k}", (f"train.seed={k}",)) for k in range(protocol.pretrain_runs)]


def val_runs(protocol: Protocol) -> Dict[int, Dict[str, int]]:
    """{budget: {cell: seeds}} of the tuning stages: each cell's curve at curve_seeds seeds, and its chosen budget
    (once set) at pilot_pairs seeds."""
    out: Dict[int, Dict[str, int]] = {}
    for spec in protocol.cells:
        for budget in spec.curve:
            out.setdefault(budget, {})[spec.key] = protocol.curve_seeds
        if spec.budget:
            row = out.setdefault(spec.budget, {})
            row[spec.key] = max(row.get(spec.key, 0), protocol.pilot_pairs)
    return out


def stage_curves(plan: Plan, protocol: Protocol, results: Results, world: Path, backbones: Sequence[Path]) -> None:
    """Learning curves and pilots on val (`val_runs`), shortest budgets first; seed s fine-tunes the backbone of
    pretraining run s mod K."""
    task, todo = TASKS[protocol.task], []
    for budget, cells in sorted(val_runs(protocol).items()):
        for spec in protocol.cells:
            if spec.key not in cells:
                continue
            cell = cell_of(protocol, spec)
            cell = replace(cell, key=f"{cell.key}@{budget}")
            for seed in range(cells[spec.key]):
                for init, weights in (("scratch", None), ("ppkt", backbones[seed % len(backbones)])):
                    todo += [(name, settings, cfg, {**labels, "cell": spec.key, "budget": budget})
                             for name, settings, cfg, labels in finetune_job(
                                 at_budget(plan, budget), results, world, cell, seed, init, weights, task.config,
                                 "curve")]
    if todo:
        print(f"curves (val): {len(todo)} runs to do, {plan.jobs} at a time", flush=True)
        run_jobs(plan, results, todo, task.worker, task.val_score)


def stage_confirm(plan: Plan, protocol: Protocol, protocol_file: Path, results: Results, world: Path, test_world: Path,
                  backbones: Sequence[Path]) -> None:
    """The confirmatory pairs of every cell, scored on the test world; needs a fixed protocol committed unchanged."""
    if protocol.status != "fixed":
        raise UserError(f"{protocol_file}: status is {protocol.status!r}; the confirmatory run needs a fixed protocol")
    commit = committed_version(protocol_file)
    record = {"commit": commit, "file": str(protocol_file), "out": str(plan.out)}
    results.run("protocol", {"protocol": json.loads(json.dumps(protocol.__dict__, default=lambda o: o.__dict__))},
                lambda: record, stage="protocol")
    task, todo = TASKS[protocol.task], []
    for spec in protocol.cells:
        cell = cell_of(protocol, spec)
        for i in range(spec.pairs):
            k, seed = i % len(backbones), protocol.first_seed + i
            for init, weights in (("scratch", None), ("ppkt", backbones[k])):
                todo += [(name, settings, cfg, {**labels, "pair": i, "pretrain_run": k, "budget": spec.budget})
                         for name, settings, cfg, labels in finetune_job(
                             at_budget(plan, spec.budget), results, world, cell, seed, init, weights, task.config,
                             "confirm")]
    if todo:
        print(f"confirm (test): {len(todo)} runs to do, {plan.jobs} at a time", flush=True)
        run_jobs(plan, results, todo, partial(task.worker, test_world=str(test_world)), task.test_scores[0])


def stage_floors(plan: Plan, protocol: Protocol, results: Results, world: Path, test_world: Path,
                 seeds: int = 3) -> None:
    """Both floors per cell, fitted on the labelled points of the cell's first `seeds` pairs (the same scenes and
    points as their fine-tuning runs), scored on the test world."""
    from ppkt.benchmark.floor import LookupTable, NearestNeighbours, score_floor, training_clouds
    from ppkt.data.scenes import get_class_set, list_scenes
    from ppkt.train.finetune import select_training_scenes
    from ppkt.train.run_dir import file_digest

    classes = get_class_set(world / "classes.json")
    train, test = list_scenes(world, "train"), list_scenes(test_world, "test")
    inputs = {"world": file_digest(world / "dataset.json"), "test_world": file_digest(test_world / "dataset.json")}
    for spec in protocol.cells:
        if spec.key == "probe":
            continue  # the probe trains on all labels: the floors of "full" apply
        cell = cell_of(protocol, spec)
        for i in range(min(seeds, spec.pairs)):
            seed = protocol.first_seed + i
            cfg = run_config(at_budget(plan, spec.budget), world, cell, seed, None)
            for kind, model in (("lookup", LookupTable(classes.num_classes)), ("knn", NearestNeighbours(classes.num_classes))):
                settings = {"cell": spec.key, "seed": seed, "overrides": list(cell.overrides), "inputs": inputs,
                            "model": {k: v for k, v in model.__dict__.items() if isinstance(v, (int, float, str))}}

                def work(model=model, cfg=cfg, seed=seed) -> dict:
                    t = time.perf_counter()
                    scenes, _ = select_training_scenes(cfg, train, classes)
                    model.fit(training_clouds(scenes, classes, cfg.data.limited_points, seed))
                    return {"test_miou": score_floor(model, test, classes)["miou"], **provenance(time.perf_counter() - t)}

                r = results.run(f"floor/{spec.key}/{kind}_s{seed}", settings, work, stage="floor", cell=spec.key,
                                kind=kind, seed=seed)
                print(f"floor {spec.key} {kind} seed {seed}: test mIoU {100 * r['test_miou']:.1f}", flush=True)


def upgrade_digests(results: Results) -> int:
    """Records that name their backbone by its file's sha256 (before `weights_digest`) get the digest of its weights,
    while the file they name still has those bytes; returns how many changed (saved when any did)."""
    from ppkt.train.run_dir import file_digest, weights_digest

    changed = 0
    for record in results.records.values():
        inputs = record.get("settings", {}).get("inputs", {})
        path = record.get("settings", {}).get("config", {}).get("model", {}).get("pretrained")
        old = inputs.get("backbone")
        if old and not old.startswith("weights:") and path and Path(path).is_file() and file_digest(Path(path)) == old:
            inputs["backbone"] = weights_digest(Path(path))
            changed += 1
    if changed:
        results.save()
    return changed


OVERFIT = {"map25": 0.90, "map50": 0.70}  # what the detector must reach on the scenes it trains on


def diagnose_proposals(checkpoint: Path, data: Path, counts: Sequence[int] = (256, 512, 1024)) -> Dict[str, dict]:
    """{proposal count: {"recall": share of the val boxes some proposal centre reaches, "map25", "map50"}} of a
    detection checkpoint on `data`'s val split (`ppkt.detection.diagnose`): do the proposals or the head limit it?"""
    import torch

    from ppkt.data.scenes import list_scenes
    from ppkt.detection.dataset import DetScenes
    from ppkt.detection.diagnose import proposal_recall
    from ppkt.detection.evaluate import evaluate_detector
    from ppkt.train.detect import load_detector

    model, classes, cfg, _ = load_detector(checkpoint)
    dataset = DetScenes(list_scenes(data, "val"), classes, cfg.data.voxel_size, train=False, features=cfg.data.features)
    counts = [n for n in counts if n <= model.num_seeds]
    recall = proposal_recall(model, dataset, torch.device("cpu"), counts)
    out, own = {}, model.num_proposals
    for n in counts:
        model.num_proposals = n
        s = evaluate_detector(model, dataset, torch.device("cpu"), cfg.eval, None, "val", progress=False)
        out[str(n)] = {"recall": recall[n], "map25": s["mAP@0.25"], "map50": s["mAP@0.5"]}
    model.num_proposals = own
    return out


def stage_overfit(plan: Plan, protocol: Protocol, results: Results, world: Path) -> dict:
    """The detector's overfit check (record "overfit"): the first `overfit_scenes` training scenes are both its
    training and its validation split, no augmentation, whole scenes, from scratch; mAP every overfit_eval_every
    iterations. Returns the record: "curve" [(iteration, mAP@0.25, mAP@0.5)], "passed", "first" (the first iteration
    at OVERFIT, or None) and the final per-class AP@0.25."""
    import shutil

    from ppkt.benchmark.detection import detection_config
    from ppkt.train.detect import finetune_detection

    data = plan.out / "overfit" / "data"
    names = (world / "splits" / "train.txt").read_text().split()[:protocol.overfit_scenes]
    cell = Cell("overfit", "overfit check", ("data.augment=false", "data.max_voxels=null",
                                             f"train.eval_every={protocol.overfit_eval_every}"), 1.0)
    cfg = detection_config(at_budget(plan, protocol.overfit_iterations), data, cell, 0, None, "scratch")
    cfg.train.out_dir = str(plan.out / "overfit" / "run")
    settings = {"config": json.loads(json.dumps(cfg, default=lambda o: o.__dict__)), "scenes": names,
                "thresholds": OVERFIT}

    def work() -> dict:
        t = time.perf_counter()
        if data.exists():
            shutil.rmtree(data)
        (data / "splits").mkdir(parents=True)
        for name in names:
            shutil.copytree(world / "scenes" / name, data / "scenes" / name)
        for split in ("train", "val"):
            (data / "splits" / f"{split}.txt").write_text("".join(n + "\n" for n in names))
        run_dir = finetune_detection(cfg, overwrite=True)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["iteration"], r["val_map25"], r["val_map50"]) for r in rows if "val_map25" in r]
        first = next((i for i, a, b in curve if a >= OVERFIT["map25"] and b >= OVERFIT["map50"]), None)
        final = json.loads((run_dir / "eval" / "metrics.json").read_text())
        per_class = {k: v.get("AP@0.25") for k, v in final.get("per_class", {}).items()}
        return {"curve": curve, "first": first, "passed": first is not None, "per_class_ap25": per_class,
                "diagnosis": diagnose_proposals(run_dir / "checkpoints" / "last.pt", data),
                **provenance(time.perf_counter() - t)}

    record = results.run("overfit", settings, work, stage="overfit")
    last = record["curve"][-1] if record["curve"] else (0, 0.0, 0.0)
    print(f"overfit check: {'passed at iteration ' + str(record['first']) if record['passed'] else 'NOT passed'} "
          f"(last: iteration {last[0]}, mAP@0.25 {100 * last[1]:.1f}, mAP@0.5 {100 * last[2]:.1f})", flush=True)
    for n, d in record.get("diagnosis", {}).items():
        print(f"  {n} proposals: {100 * d['recall']:.0f} % of the boxes reached by a proposal, mAP@0.25 "
              f"{100 * d['map25']:.1f}, mAP@0.5 {100 * d['map50']:.1f}", flush=True)
    return record


def run(protocol: Protocol, protocol_file: Path, out: Path, until: str = "curves") -> Results:
    """The stages up to `until` ("curves": tuning on val; "confirm": the confirmatory run, then the floors)."""
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.json")
    upgrade_digests(results)
    plan = plan_of(protocol, out)
    world, test_world = stage_worlds(plan, protocol, results)
    if protocol.task == "detection" and not stage_overfit(plan, protocol, results, world)["passed"]:
        raise RunFailed("the detector does not fit the scenes it trains on (the overfit check above); find out why "
                         "before comparing detectors (docs/detection.md)")
    backbones = stage_pretrains(plan, protocol, results, world)
    stage_curves(plan, protocol, results, world, backbones)
    if until == "confirm":
        stage_confirm(plan, protocol, protocol_file, results, world, test_world, backbones)
        if protocol.task == "segmentation":
            stage_floors(plan, protocol, results, world, test_world)
    return results


# ----------------------------------------------------------------------------------------------------- analysis
def curve(results: Results, cell: str, score: str = "miou") -> Dict[int, Dict[str, List[float]]]:
    """{budget: {"scratch": [val `score` points per seed], "ppkt": [...]}} of a cell's learning curve."""
    out: Dict[int, Dict[str, List[float]]] = {}
    for r in sorted(results.select(stage="curve", cell=cell), key=lambda r: (r["budget"], r["seed"])):
        out.setdefault(r["budget"], {}).setdefault(r["init"], []).append(100 * r[score])
    return out


def plateau(results: Results, cell: str, gain: float, score: str = "miou") -> dict:
    """The cell's curve with scratch's change per doubling; "budget": the smallest B whose doubling changed scratch's
    mean val `score` by less than `gain` points (None when no doubling did), "last_gain": the change at the last
    doubling."""
    c = curve(results, cell, score)
    budgets = [b for b in sorted(c) if c[b].get("scratch")]
    means = {b: mean(c[b]["scratch"]) for b in budgets}
    steps = {b: means[b2] - means[b] for b, b2 in zip(budgets, budgets[1:]) if b2 == 2 * b}
    flat = [b for b, change in steps.items() if abs(change) < gain]
    return {"curve": c, "changes": steps, "budget": min(flat) if flat else None,
            "last_gain": steps[max(steps)] if steps else None}


def pilot(results: Results, protocol: Protocol, spec: CellProtocol) -> Optional[dict]:
    """The pilot of a cell on val: the paired differences PPKT - scratch (points) of the seeds run at its chosen budget,
    their sd, and the pairs Stein's rule asks for a ±protocol.half_width interval; None before 2 pairs exist."""
    from ppkt.benchmark.stats import stein_pairs

    score = TASKS[protocol.task].val_score
    runs = {(r["init"], r["seed"]): r for r in results.select(stage="curve", cell=spec.key, budget=spec.budget)}
    seeds = sorted(s for (init, s) in runs if init == "scratch" and ("ppkt", s) in runs) if spec.budget else []
    if len(seeds) < 2:
        return None
    d = [100 * (runs["ppkt", s][score] - runs["scratch", s][score]) for s in seeds]
    sd = stdev(d)
    return {"pairs": len(seeds), "diffs": d, "sd": sd,
            "stein": stein_pairs(sd, len(seeds), protocol.half_width, protocol.confidence)}


def summary(results: Results, cell: str, margin: float, confidence: float = 0.95,
            score: str = "test_miou") -> Optional[dict]:
    """A cell's confirmatory result: both arms' mean test mIoU (points), the clustered interval of PPKT - scratch over
    pretraining runs, the verdict, the floors and the spread between pretraining runs; None without a complete pair."""
    from ppkt.benchmark.stats import clustered_interval, verdict

    runs = results.select(stage="confirm", cell=cell)
    by = {(r["init"], r["pair"]): r for r in runs}
    pairs = sorted(p for (init, p) in by if init == "scratch" and ("ppkt", p) in by)
    if not pairs:
        return None
    diffs: Dict[int, List[float]] = {}
    for p in pairs:
        diffs.setdefault(by["ppkt", p]["pretrain_run"], []).append(100 * (by["ppkt", p][score] - by["scratch", p][score]))
    iv = clustered_interval(diffs, confidence)
    run_means = [mean(v) for v in diffs.values()]
    floors = {}
    for kind in ("lookup", "knn"):
        values = [100 * r["test_miou"] for r in results.select(stage="floor", cell="full" if cell == "probe" else cell,
                                                              kind=kind)]
        if values:
            floors[kind] = mean(values)
    scratch, ppkt = mean(100 * by["scratch", p][score] for p in pairs), mean(100 * by["ppkt", p][score] for p in pairs)
    floor = max(floors.values()) if floors else None
    below = [name for name, v in (("scratch", scratch), ("PPKT", ppkt)) if floor is not None and v < floor]
    text = verdict(iv, margin) + (f"; under-trained ({' and '.join(below)} below the floor)" if below else "")
    return {"title": runs[0]["title"], "pairs": len(pairs), "pretrain_runs": len(diffs), "budget": runs[0]["budget"],
            "scratch": scratch, "ppkt": ppkt, "interval": iv, "verdict": text, "floors": floors,
            "pretrain_spread": (max(run_means) - min(run_means)) if len(run_means) > 1 else None,
            "minutes": sum(r["seconds"] for r in runs if r["pair"] in pairs) / 60}


# ----------------------------------------------------------------------------------------------------- rerun
def _moved(value, old: str, new: str):
    """`value` (a config tree) with every string path under `old` moved under `new`."""
    if isinstance(value, dict):
        return {k: _moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + "/")):
        return new + value[len(old):]
    return value


def seed_results(source: Path, out: Path) -> int:
    """Start <out>/results.json from the records of `source` (e.g. docs/results/<name>.json) made in another folder:
    every path under their folder moved under `out`, so that their settings match the runs asked for in `out` (a
    record's settings hold its paths). Returns how many records it holds."""
    data = json.loads(Path(source).read_text())
    old = next((str(Path(r["settings"]["config"]["train"]["out_dir"]).parents[1 if r.get("stage") == "pretrain" else 2])
                for r in data.get("runs", []) if r.get("settings", {}).get("config", {}).get("train", {}).get("out_dir")),
               None)
    if old is not None and old != str(out):
        data["runs"] = [_moved(r, old, str(out)) for r in data["runs"]]
    from ppkt.atomic import write_json

    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / "results.json", data)
    return len(data.get("runs", []))


def config_schema(task: str) -> type:
    """The fine-tuning config class of a task."""
    if task == "detection":
        from ppkt.train.detect_config import DetectionConfig

        return DetectionConfig
    from ppkt.train.finetune_config import FinetuneConfig

    return FinetuneConfig


def rerun(results: Results, name: str, out: Path, protocol: Protocol) -> dict:
    """Rerun record `name` (a curve or confirm run) from nothing in `out`: its worlds, the pretraining run it
    fine-tunes (checked against the recorded backbone's hash), and the run itself. Returns {"recorded", "rerun"}
    (points of the record's score: the task's first test score for a confirm run, else its val score)."""
    from omegaconf import OmegaConf

    from ppkt.synthetic.dataset import write_dataset
    from ppkt.train.run_dir import weights_digest

    if name not in results.records:
        raise UserError(f"{results.path}: no run {name!r}; the ids are the names of its records")
    record = results.records[name]
    if record.get("stage") not in ("curve", "confirm"):
        raise UserError(f"{name}: only fine-tuning runs (curve/..., confirm/...) are rerun; this is a {record.get('stage')}")
    config = record["settings"]["config"]
    old, new = str(Path(config["train"]["out_dir"]).parents[2]), str(Path(out).resolve())
    test = record["stage"] == "confirm"
    for world in ("world", TEST_WORLD) if test else ("world",):
        write_dataset(Path(new) / world, workers=1, progress=False, **results.records[world]["settings"])
    pretrained = config["model"]["pretrained"]
    if pretrained:
        from ppkt.config import PretrainConfig, upgrade_saved
        from ppkt.train.pretrain import pretrain

        source = results.records[f"pretrain/{Path(pretrained).parent.name}"]
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig),
                                                  upgrade_saved(_moved(source["settings"]["config"], old, new))))
        backbone = pretrain(cfg, overwrite=True) / "backbone.pth"
        if weights_digest(backbone) != record["settings"]["inputs"]["backbone"]:
            print(f"note: the rerun backbone {backbone} differs from the recorded one (hash)")
    task = TASKS[protocol.task]
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_schema(protocol.task)), _moved(config, old, new)))
    scores = task.worker(cfg, str(Path(new) / TEST_WORLD) if test else None)
    key = task.test_scores[0] if test else task.val_score
    return {"score": key, "recorded": 100 * record[key], "rerun": 100 * scores[key]}
