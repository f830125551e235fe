"""The transfer benchmark: does PPKT pretraining help fine-tuning, cell by cell, with an interval?

Stages (each resumable; every finished piece is a record of `results.json`, reused only with identical settings):
1. world: a synthetic world (`ppkt.synthetic.dataset.write_dataset`) -- unlabelled frames for pretraining,
   labelled 3D scenes (train / val) for fine-tuning;
2. pretrain: one PPKT backbone (ImageNet EfficientNet-Lite0 teacher, the z-up world frame of the scenes) on the
   frames of the training scenes;
3. fine-tune: for every cell (a few-label protocol) and seed, a scratch run and its pretrained twin with the same
   labelled selection, seed and data order; each evaluated on the val scenes at the end, scratch also at 80 % of its
   iterations (the convergence check: scratch's mIoU over the last 20 % of its iterations). Seeds come in rounds:
   `seeds` pairs per cell first, then one more pair per round for each cell whose interval is still wider than
   `target_halfwidth`, up to `max_seeds`, while the next round fits in `budget_minutes` (`more_seeds`);
4. report (`write_report`, from results.json alone): per cell both mIoUs, the paired difference with its 95 %
   t-interval over seeds (`ppkt.benchmark.stats`), the verdict, the convergence check and the time per stage.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from concurrent.futures import as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

from ppkt.benchmark.results import Results
from ppkt.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # ppkt/configs: in the installed package too


@dataclass(frozen=True)
class Cell:
    """One column group of the benchmark: a few-label protocol as fine-tuning config overrides."""

    key: str  # short id, part of run names: "f0.15", "p50", "full", "probe"
    title: str  # the report's row label
    overrides: Tuple[str, ...]
    labels: float  # label share for ordering the report and the plot (1.0: all labels)


def scene_fraction(fraction: float, stratified: bool = True) -> Cell:
    return Cell(f"f{fraction:g}", f"{100 * fraction:g} % of the scenes" + (" (stratified)" if stratified else ""),
                (f"data.label_fraction={fraction}", f"data.stratified={str(stratified).lower()}"), fraction)


def limited_points(k: int) -> Cell:
    return Cell(f"p{k}", f"{k} labelled points per scene", (f"data.limited_points={k}",), 0.0 + k * 1e-6)


FULL = Cell("full", "100 % of the scenes", (), 1.0)
# the probe trains one linear layer: plain SGD at lr 0.1 fits it in 100 iterations (pilot: +29.1 [+26.7, +31.4])
PROBE = Cell("probe", "linear probe (frozen backbone), 100 % of the scenes",
             ("model.freeze_backbone=true", "optim.name=sgd", "optim.lr=0.1", "optim.weight_decay=0.0001"), 2.0)

# The fine-tuning recipe of the benchmark, over configs/finetune_synthetic.yaml (SGD lr 0.1, poly). Measured on the
# 120-scene world, scratch, all labels (docs/transfer_benchmark.md): SGD reaches 25-31 mIoU after 200 iterations and
# 39 only after 800; AdamW at lr 0.005 with a cosine decay reaches 37-40 after 240-300.
# The transfer benchmark's student: SR-UNet14 at the widths of configs/*_synthetic.yaml. The one at half these widths
# (HALF_WIDTHS: 1.7x faster per iteration, 0.19 vs 0.34 s on 2 x 8000 voxels, 1 thread) bought seeds but changed the
# 15 % verdict (docs/transfer_history.md); the detection benchmark keeps it for time.
STUDENT = (16, 32, 64, 128, 128, 64, 48, 48)
HALF_WIDTHS = (8, 16, 32, 64, 64, 32, 24, 24)
TARGET_HALFWIDTH = 2.0  # mIoU points: the 95 % interval every cell of the default run reaches (issue 11)
RECIPE = ("optim.name=adamw", "optim.lr=0.005", "optim.weight_decay=0.01", "optim.schedule=cosine")


def machine() -> str:
    cpu = "?"
    if Path("/proc/cpuinfo").is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def code_version() -> str:
    from ppkt.provenance import commit

    return commit()


def provenance(seconds: float) -> dict:
    """What a record says about when, where and with what code it was made."""
    return {"seconds": seconds, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": machine(), "code": code_version()}


@dataclass
class Plan:
    """What the benchmark runs (the defaults are `make bench-transfer`)."""

    out: Path
    cells: Sequence[Cell]
    seeds: int
    scenes: int
    frames_per_scene: int
    point_spacing: float
    pretrain_iterations: int
    finetune_iterations: int
    probe_iterations: int
    max_voxels: int
    jobs: int  # fine-tuning runs at once (each with threads // jobs torch threads)
    threads: int
    finetune_overrides: Tuple[str, ...] = RECIPE  # over configs/finetune_synthetic.yaml, before each cell's own
    channels: Optional[Tuple[int, ...]] = None  # the student's 8 widths (pretraining and fine-tuning); None: configs'
    max_seeds: int = 0  # more pairs per cell while its interval is wider than target_halfwidth (0: just `seeds`)
    target_halfwidth: float = TARGET_HALFWIDTH
    budget_minutes: float = math.inf  # wall clock of all stages; no seed round starts that would not fit


def stage_world(plan: Plan, results: Results, name: str = "world", seed: int = 0, test: bool = False,
                scenes: Optional[int] = None) -> Path:
    """The world in plan.out / name (record `name`): plan.scenes rooms (or `scenes`) of world `seed`; a test world
    (`test`: scenes test_xxxx, split "test", no frames) when asked."""
    from ppkt.synthetic.dataset import write_dataset

    world = plan.out / name
    settings = {"scenes": scenes or plan.scenes, "frames_per_scene": 0 if test else plan.frames_per_scene,
                "point_spacing": plan.point_spacing, "seed": seed, "compact": True, **({"test": True} if test else {})}

    def work() -> dict:
        t = time.perf_counter()
        write_dataset(world, workers=plan.threads, progress=False, **settings)
        return provenance(time.perf_counter() - t)

    if not (world / "dataset.json").is_file():
        results.records.pop(name, None)  # the folder is gone: make it again
    results.run(name, settings, work, stage="world")
    return world


def stage_pretrain(plan: Plan, results: Results, world: Path, name: str = "ppkt", overrides: Sequence[str] = (),
                   inputs: Optional[Dict[str, Path]] = None) -> Path:
    """The backbone export of one pretraining run (record "pretrain" for PPKT, "pretrain/<name>" for the others;
    folder pretrain/<name>): configs/pretrain_synthetic.yaml on the training scenes' frames, then `overrides`;
    `inputs` are the further files it reads (hashed into its settings)."""
    from ppkt.config import PretrainConfig, load_config
    from ppkt.train.pretrain import pretrain
    from ppkt.train.run_dir import run_settings

    run, record = plan.out / "pretrain" / name, "pretrain" if name == "ppkt" else f"pretrain/{name}"
    # the frames of the training scenes only: the val scenes stay unseen, as in the paper (ScanNet train frames)
    train_frames = [str(world / "frames" / name) for name in (world / "splits" / "train.txt").read_text().split()]
    cfg = load_config(CONFIGS / "pretrain_synthetic.yaml", [
        f"data.roots=[{','.join(train_frames)}]", "data.frame=world", f"train.iterations={plan.pretrain_iterations}",
        f"train.threads={plan.threads}", f"train.out_dir={run}", "train.checkpoint_every=100",
        *([f"student.channels=[{','.join(map(str, plan.channels))}]"] if plan.channels else []), *overrides])
    settings = run_settings(cfg, {"world": world / "dataset.json", **(inputs or {})})

    def work() -> dict:
        # continue a stopped run only if it was made with the same settings (train.iterations may differ: resuming
        # is exact, and a shorter earlier run is its prefix); anything else starts over
        import torch

        from ppkt.train.run_dir import config_changes

        t, last = time.perf_counter(), run / "checkpoints" / "last.pt"
        state = torch.load(last, map_location="cpu", weights_only=True) if last.is_file() else None
        same = state is not None and state["iteration"] <= plan.pretrain_iterations and not config_changes(
            state["config"], settings["config"], ["train.iterations"])
        pretrain(cfg, resume=same, overwrite=not same)
        return provenance(time.perf_counter() - t)

    if not (run / "backbone.pth").is_file():
        results.records.pop(record, None)
    accept_new_defaults(results, record, settings, PretrainConfig)
    results.run(record, settings, work, stage="pretrain", method=name)
    return run / "backbone.pth"


def accept_new_defaults(results: Results, name: str, settings: dict, schema: type) -> None:
    """A record made before ppkt gained config keys is still the same run when its config, completed with the
    schema's defaults, equals today's and its inputs are the same: then its settings are brought up to date."""
    from omegaconf import OmegaConf

    from ppkt.config import upgrade_saved
    from ppkt.train.run_dir import config_changes

    record = results.records.get(name)
    if record is None or results.get(name, settings) is not None:
        return
    saved = record["settings"]
    completed = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema),
                                                       upgrade_saved(saved.get("config", {}))))
    now = json.loads(json.dumps(settings))
    if saved.get("inputs") == now.get("inputs") and not config_changes(completed, now["config"]):
        record["settings"] = now
        results.save()


def finetune_config(plan: Plan, world: Path, cell: Cell, seed: int, backbone: Optional[Path], init: str = ""):
    """The fine-tuning config of one run (scratch when backbone is None; `init` names its folder, by default
    "ppkt" or "scratch")."""
    from ppkt.config import load_config
    from ppkt.train.finetune_config import FinetuneConfig

    iterations = plan.probe_iterations if cell.key == PROBE.key else plan.finetune_iterations
    init = init or ("ppkt" if backbone else "scratch")
    # scratch is also evaluated at 80 % of its iterations (the convergence check); every run at the end
    eval_every = 0 if backbone else max(1, iterations * 4 // 5)
    return load_config(CONFIGS / "finetune_synthetic.yaml", [
        f"data.root={world}", f"data.classes={world / 'classes.json'}", f"data.max_voxels={plan.max_voxels}",
        f"train.seed={seed}", f"train.iterations={iterations}", f"train.eval_every={eval_every}",
        "train.checkpoint_every=100000", "train.eval_ply=false", f"train.threads={max(1, plan.threads // plan.jobs)}",
        "train.workers=0",  # the parallel jobs fill the cores; a loader process each would only compete
        f"train.out_dir={plan.out / 'finetune' / cell.key / f'{init}_s{seed}'}",
        f"model.pretrained={backbone or 'null'}", *([f"model.channels=[{','.join(map(str, plan.channels))}]"]
                                                    if plan.channels else []),
        *plan.finetune_overrides, *cell.overrides], FinetuneConfig)


def run_finetune(cfg) -> dict:
    """Fine-tune (from nothing: a stopped run starts over) and return its scores: the final val mIoU and the
    val mIoU curve [(iteration, mIoU)] (runs in a worker process)."""
    from ppkt.train.finetune import finetune

    t = time.perf_counter()
    out = finetune(cfg, overwrite=True)
    final = json.loads((out / "eval" / "metrics.json").read_text())
    curve = [(r["iteration"], r["val_miou"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "val_miou" in r]
    return {"miou": final["miou"], "curve": curve, **provenance(time.perf_counter() - t)}


def rerun_finetune(results: Results, name: str, where: Path) -> dict:
    """Fine-tune record `name` again in `where` from its recorded config, with the inputs it names (the world, the
    backbone) as they are now, each checked against the record's digest first; returns {"recorded", "rerun"} (val
    mIoU points)."""
    from omegaconf import OmegaConf

    from ppkt.train.finetune_config import FinetuneConfig
    from ppkt.train.run_dir import weights_digest

    if name not in results.records:
        raise UserError(f"{results.path}: no run {name!r}; the ids are the names of its records")
    record = results.records[name]
    settings = record.get("settings", {})
    if "miou" not in record or "config" not in settings:
        raise UserError(f"{name}: not a fine-tuning record (stage {record.get('stage')})")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(FinetuneConfig), settings["config"]))
    files = {"world": Path(cfg.data.root) / "dataset.json", "backbone": Path(cfg.model.pretrained or "")}
    for key, digest in settings.get("inputs", {}).items():
        if not files[key].is_file() or weights_digest(files[key]) != digest:
            raise UserError(f"{files[key]}: not the {key} that record {name} was made from (missing or "
                             "changed); run the benchmark first")
    cfg.train.out_dir = str(Path(where) / name)
    return {"score": "miou", "recorded": 100 * record["miou"], "rerun": 100 * run_finetune(cfg)["miou"]}


def pair_jobs(plan: Plan, results: Results, world: Path, backbone: Path, cell: Cell, seed: int) -> list:
    """The runs of one seed of a cell not yet in results: (name, settings, config, labels) each."""
    return [job for init, weights in (("scratch", None), ("ppkt", backbone))
            for job in finetune_job(plan, results, world, cell, seed, init, weights)]


def finetune_job(plan: Plan, results: Results, world: Path, cell: Cell, seed: int, init: str,
                 weights: Optional[Path], config: Callable = None, stage: str = "finetune") -> list:
    """[(name, settings, config, labels)] of the run "<cell>/<init>_s<seed>" ("<stage>/<cell>/..." for another stage)
    when results lacks it, else []; its config is config(plan, world, cell, seed, weights, init) (default
    `finetune_config`)."""
    from ppkt.train.run_dir import run_settings

    cfg = (config or finetune_config)(plan, world, cell, seed, weights, init)
    inputs = {"world": world / "dataset.json", **({"backbone": weights} if weights else {})}
    name = f"{cell.key}/{init}_s{seed}" if stage == "finetune" else f"{stage}/{cell.key}/{init}_s{seed}"
    settings = run_settings(cfg, inputs)
    accept_new_defaults(results, name, settings, type(cfg))  # a record made before a config key was added
    if results.get(name, settings) is not None:
        return []
    return [(name, settings, cfg, {"stage": stage, "cell": cell.key, "title": cell.title, "labels": cell.labels,
                                   "init": init, "seed": seed})]


def more_seeds(plan: Plan, results: Results, counts: Dict[str, int], minutes_left: float, stage: str = "finetune",
               score: str = "miou") -> Dict[str, int]:
    """The seed count of each cell for the next round: `plan.seeds` at first; then one more for every cell whose
    interval (over the pairs of seeds < its count) is wider than plan.target_halfwidth, below plan.max_seeds --
    cells with the widest interval first, as long as the round's estimated wall-clock minutes (the mean minutes of
    a cell's finished runs, two runs a pair, `plan.jobs` at a time) fit in `minutes_left`."""
    want = {c.key: max(counts.get(c.key, 0), plan.seeds) for c in plan.cells}
    if want != {c.key: counts.get(c.key, 0) for c in plan.cells}:
        return want  # the first round
    widths = {}
    for c in plan.cells:
        s = cell_summary(results, c.key, seeds=range(counts[c.key]), stage=stage, score=score)
        width = math.inf if s is None else s["interval"].half_width
        if width > plan.target_halfwidth and counts[c.key] < plan.max_seeds:
            widths[c.key] = width
    round_minutes = 0.0
    for key in sorted(widths, key=widths.get, reverse=True):
        runs = results.select(stage=stage, cell=key)
        minutes = 2 * sum(r["seconds"] for r in runs) / max(len(runs), 1) / 60 / plan.jobs
        if round_minutes + minutes > minutes_left:
            continue
        round_minutes += minutes
        want[key] += 1
    return want


def stage_finetune(plan: Plan, results: Results, world: Path, backbone: Path, jobs_of: Callable = None,
                   worker: Callable = None, stage: str = "finetune", score: str = "miou") -> None:
    """Rounds of seeds (`more_seeds`) until no cell needs more or the budget is spent. jobs_of(plan, results, world,
    backbone, cell, seed) lists a seed's runs not yet done (default `pair_jobs`), worker(config) runs one and returns
    its scores (default `run_finetune`); their records have `stage` and the cell summaries compare `score`."""
    from ppkt.benchmark.results import wall_minutes

    jobs_of, worker = jobs_of or pair_jobs, worker or run_finetune
    counts: Dict[str, int] = {}
    while True:
        # the budget counts the world, the pretraining and this stage's runs (not the other task's in the same file)
        spent = wall_minutes([r for r in results.records.values() if r.get("stage") in ("world", "pretrain", stage)])
        want = more_seeds(plan, results, counts, plan.budget_minutes - spent, stage, score)
        if want == counts:
            return
        todo = [job for c in plan.cells for seed in range(counts.get(c.key, 0), want[c.key])
                for job in jobs_of(plan, results, world, backbone, c, seed)]
        counts = want
        if todo:
            print(f"{stage}: {len(todo)} runs to do, {plan.jobs} at a time (seeds per cell: "
                  + ", ".join(f"{k} {n}" for k, n in counts.items()) + ")", flush=True)
            run_jobs(plan, results, todo, worker, score)


def run_jobs(plan: Plan, results: Results, todo: list, worker: Callable = None, score: str = "miou") -> None:
    """Run `todo` ((name, settings, config, labels) each) with worker(config) (default `run_finetune`) in plan.jobs
    spawned processes; record each, and say how long the rest will take at the pace of the runs done (seconds per
    iteration). Ctrl-C stops the workers at once (a stopped run starts over next time)."""
    from ppkt.pool import process_pool

    left = sum(cfg.train.iterations for _, _, cfg, _ in todo)
    spent, finished = 0.0, 0
    with process_pool(plan.jobs, "spawn") as pool:
        futures = {pool.submit(worker or run_finetune, cfg): (name, settings, cfg, labels)
                   for name, settings, cfg, labels in todo}
        for done, future in enumerate(as_completed(futures), 1):
            name, settings, cfg, labels = futures[future]
            scores = future.result()
            results.run(name, settings, lambda: scores, **labels)
            left -= cfg.train.iterations
            spent, finished = spent + scores["seconds"], finished + cfg.train.iterations
            eta = left * spent / finished / plan.jobs / 60
            print(f"[{done}/{len(todo)}] {name}: val {score} {100 * scores[score]:.1f} ({scores['seconds']:.0f} s)"
                  + (f"; about {eta:.0f} min left" if left else ""), flush=True)


def run(plan: Plan) -> Results:
    """Every stage; returns the results (also in plan.out / results.json)."""
    plan.out.mkdir(parents=True, exist_ok=True)
    results = Results(plan.out / "results.json")
    world = stage_world(plan, results)
    backbone = stage_pretrain(plan, results, world)
    stage_finetune(plan, results, world, backbone)
    return results


def cell_summary(results: Results, cell_key: str, confidence: float = 0.95, seeds: Optional[Sequence[int]] = None,
                 a: str = "ppkt", b: str = "scratch", stage: str = "finetune", score: str = "miou") -> Optional[Dict]:
    """Both arms' mean `score` (points; keys "ppkt" for a, "scratch" for b), the paired difference a - b (two inits
    of the same seeds) with its interval and verdict, and the convergence check of b ("scratch_change"), from one
    cell's records of `stage` (of `seeds` only, when given); None when no complete pair exists."""
    from statistics import mean

    from ppkt.benchmark.stats import MARGIN, paired_interval, verdict

    runs = [r for r in results.select(stage=stage, cell=cell_key) if r["init"] in (a, b)]
    by = {(r["init"], r["seed"]): r for r in runs}
    wanted = None if seeds is None else set(seeds)
    seeds = sorted(s for (init, s) in by if init == b and (a, s) in by and (wanted is None or s in wanted))
    if not seeds:
        return None
    base = [100 * by[b, s][score] for s in seeds]
    other = [100 * by[a, s][score] for s in seeds]
    interval = paired_interval(other, base, confidence)
    changes = [_last_change(by[b, s]["curve"]) for s in seeds]
    changes = [c for c in changes if c is not None]
    return {"title": runs[0]["title"], "labels": runs[0]["labels"], "seeds": len(seeds), "scratch": mean(base),
            "ppkt": mean(other), "interval": interval, "verdict": verdict(interval, MARGIN),
            "scratch_change": mean(changes) if changes else None,
            "minutes": sum(r["seconds"] for r in runs if r["seed"] in seeds) / 60}


def _last_change(curve: Sequence[Sequence[float]]) -> Optional[float]:
    """mIoU points gained over the last 20 % of the iterations (final evaluation minus the one at 80 %)."""
    if len(curve) < 2:
        return None
    return 100 * (curve[-1][1] - curve[-2][1])
