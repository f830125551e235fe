"""The run skeleton every training command shares (pretraining, segmentation and detection fine-tuning, the 2D
teacher): everything a run does around its step.

A task (a `Task` subclass: `ppkt.train.pretrain`, `finetune`, `detect`, `teacher2d`) builds its datasets, model,
optimiser and schedule, computes one iteration's loss, evaluates, and names its extra checkpoint fields. `train`
owns the rest, in this order:
1. before any folder exists: the output guard (a new run never replaces an old one unless `overwrite`; `resume`
   needs a checkpoint) and, on resume, the saved config against the one asked for (only the task's safe keys differ);
2. the process (torchrun's group, device, threads) and the Ctrl-C / SIGTERM handler (the first signal says at once
   which iteration the run stops after, saved; a second stops at once);
3. the task's build (its datasets check their data, labels included) and the batch against the data (`check_batch`);
   then the folder: config and training-scene list (written once, atomically; a resume checks the scenes are the
   same). A run stopped by its data (UserError, RunFailed) before its first checkpoint removes what it wrote;
4. the loop over a resumable batch stream (`IterationBatchSampler`: a resumed run sees the same batches), each step
   through `optimizer_step` (a non-finite loss stops the run); logging every `log_every` iterations (metrics.jsonl,
   TensorBoard, the progress line), evaluation every `eval_every` (best.pt keeps the best), last.pt every
   `checkpoint_every` and at the end;
5. the final evaluation into eval/, the loss-curve PNG and the summary lines.
Under torchrun every process trains on its share of each batch (DistributedDataParallel); the first one logs,
evaluates and saves.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from ppkt.atomic import atomic_path
from ppkt.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_atomic
from ppkt.config import ConfigError, config_to_dict, config_to_yaml
from ppkt.errors import RunFailed, UserError
from ppkt.progress import Progress
from ppkt.provenance import stamp
from ppkt.train.distributed import Dist, training_process
from ppkt.train.interrupt import StopRequest
from ppkt.train.logging import IterationTimer, MetricsLog, plot_loss_curve
from ppkt.train.run_dir import check_resume, start_run
from ppkt.train.sampler import IterationBatchSampler, one_thread_worker
from ppkt.train.step import optimizer_step


@dataclass(frozen=True)
class RunFiles:
    """Where a run keeps its files: `in_folder(out)` is the layout of train.out_dir (the 2D teacher keeps its own
    beside its checkpoint file)."""

    folder: Path
    last: Path  # the checkpoint a resume continues
    best: Optional[Path]  # the best on validation so far (tasks with a score)
    metrics: Path  # JSON lines, one per logged iteration
    tensorboard: Optional[Path]
    curve: Path  # loss-curve PNG
    config: Path  # the run's config, YAML
    scenes: Optional[Path]  # the training scenes, one name a line
    eval: Path  # the final evaluation's folder
    exports: Tuple[Path, ...] = ()  # further files the task writes (removed by --overwrite too)

    @classmethod
    def in_folder(cls, out: str | Path, exports: Sequence[str] = ()) -> "RunFiles":
        out = Path(out)
        return cls(out, out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt", out / "metrics.jsonl",
                   out / "tensorboard", out / "loss_curve.png", out / "config.yaml", out / "train_scenes.txt",
                   out / "eval", tuple(out / e for e in exports))

    def owned(self) -> List[Path]:
        """Every file and folder of a run (what --overwrite deletes; nothing else is touched)."""
        paths = [self.last.parent if self.last.parent != self.folder else self.last, self.best, self.metrics,
                 self.tensorboard, self.curve, self.config, self.scenes, self.eval, *self.exports]
        return [p for p in dict.fromkeys(paths) if p is not None]


class Task:
    """What one kind of training run owns; `train(task)` does everything around it.

    Class attributes: `command` (the ppkt command, e.g. "pretrain", for messages), `format` (of last.pt),
    `safe_keys` (config keys a resume may change), `title` (progress bar), `curve_title` / `ylabel` (loss curve),
    `hint` (what to do after a non-finite loss), `rate` (the name of the logged throughput), `score` /
    `score_name` (the key of `evaluate`'s result that picks best.pt, and its name; None: no best.pt). `build` sets `dataset`, `collate`, `model`, `optimizer`, `scheduler`,
    and may set `scaler` (mixed precision), `train_scenes` (names, checked on resume) and `val` (anything true when
    there is validation data).
    """

    command = ""
    format = ""
    safe_keys: Tuple[str, ...] = ()
    title = "train"
    curve_title = "training"
    ylabel = "loss"
    hint = "lower optim.lr"
    rate = "samples_per_s"
    score: Optional[str] = None
    score_name = ""
    say_best = False  # the summary names best.pt's iteration and score
    smooth = True  # the loss curve's running mean
    report_every: Optional[int] = None  # iterations between progress lines (default train.log_every)
    quiet = False  # no progress bar, no messages
    version = 1

    dataset: Dataset
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    collate: Optional[Callable] = None
    scaler: Optional[torch.amp.GradScaler] = None
    train_scenes: Optional[List[str]] = None
    val: Any = None
    best: Dict[str, Any] = {}  # {"iteration", <score>} of the best evaluation so far (set by `train`)

    def __init__(self, cfg: Any, files: RunFiles):
        self.cfg, self.files = cfg, files
        self.say: Callable[..., None] = print
        self.write: Callable[[str], None] = print  # a line above the progress bar (set during the loop)

    # ------------------------------------------------------------------------------- what each task defines
    def resume_command(self) -> str:
        """The command that continues this run (without --resume)."""
        return f"ppkt {self.command} --config {self.files.config}"

    def validate(self) -> None:
        """Check the config before anything is done (raise ConfigError)."""

    def build(self, d: Dist, device: torch.device, resumed: bool) -> None:
        raise NotImplementedError

    def trained(self) -> torch.nn.Module:
        """The module whose state the checkpoint holds (and a resume loads)."""
        return self.model

    def loss(self, net: torch.nn.Module, batch: Any, it: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def count(self, batch: Any) -> int:
        """Samples of this process's batch, for the logged rate."""
        return len(batch)

    def log_values(self, loss: torch.Tensor, lrs: Dict[str, float], d: Dist) -> Dict[str, float]:
        """The values logged at a log iteration (called by every process: it may hold a collective)."""
        return {"loss": loss.item(), "lr": next(iter(lrs.values()))}

    def report(self, values: Dict[str, float]) -> Dict[str, float]:
        """The progress line's values."""
        return {"loss": values["loss"], "lr": values["lr"]}

    def evaluate(self, out_dir: Optional[Path]) -> Dict[str, Any]:
        """Scores on the validation data (main process; `out_dir`: the final evaluation's files, None mid-run)."""
        raise NotImplementedError

    def val_values(self, s: Dict[str, Any]) -> Dict[str, float]:
        """What metrics.jsonl records of an evaluation."""
        return {}

    def best_values(self, s: Dict[str, Any]) -> Dict[str, float]:
        """What best.pt records of its evaluation (its "val" field)."""
        return {}

    def val_line(self, s: Dict[str, Any]) -> str:
        return ""

    def table(self, s: Dict[str, Any]) -> str:
        """The final evaluation, printed."""
        return ""

    def fields(self) -> Dict[str, Any]:
        """The task's extra checkpoint fields."""
        return {}

    def saved(self, done: int) -> None:
        """After last.pt is written (main process), e.g. an export beside it."""

    def after_loop(self, d: Dist) -> None:
        """After the last iteration, on every process (e.g. a collective count)."""

    def chance(self, d: Dist) -> Optional[float]:
        """The loss of an uninformed model, drawn on the curve."""
        return None

    def memory(self, d: Dist) -> Tuple[Optional[int], str]:
        """(an estimate of a process's memory in bytes on the CPU, or None; the settings it follows from)."""
        return None, ""

    def finish(self, s: Optional[Dict[str, Any]]) -> None:
        """After the last iteration of a finished run (main process), with the final evaluation's scores (None
        without validation data), e.g. the task's final export."""

    def summary(self, finished: bool) -> List[str]:
        """The closing lines (main process)."""
        f, best = self.files, self.best
        return ([f"checkpoint: {f.last}", f"metrics: {f.metrics}  curve: {f.curve}"]
                + ([f"evaluation: {f.eval}"] if finished and self.val else [])
                + ([f"best on {self.cfg.data.val_split}: iteration {best['iteration']}, {self.score_name} "
                    f"{100 * best[self.score]:.2f}: {f.best}"] if self.say_best and best.get("iteration") else []))


MAX_REPEATS = 8  # a batch may hold each training sample at most this many times


def machine_memory() -> Tuple[int, int]:
    """(total, available) bytes of this machine's memory (Linux /proc/meminfo; (0, 0) where it cannot be read)."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(info["MemTotal"].split()[0]) * 1024, int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0, 0


def check_memory(estimate: Optional[int], what: str, say: Callable[..., None]) -> None:
    """ConfigError when a CPU run's memory `estimate` (bytes) is beyond the machine's memory; a warning when it is
    beyond what is free now."""
    total, available = machine_memory()
    if not estimate or not total:
        return
    gib = lambda b: f"{b / 2**30:.1f} GiB"  # noqa: E731
    if estimate > total:
        raise ConfigError(f"{what} needs about {gib(estimate)} of memory; this machine has {gib(total)} (lower it)")
    if estimate > available:
        say(f"warning: {what} needs about {gib(estimate)} of memory; {gib(available)} is free now")


def check_batch(batch_size: int, samples: int, say: Callable[..., None]) -> None:
    """ConfigError when train.batch_size is more than MAX_REPEATS times the training samples (nonsense that would only
    grow memory); a warning when it is larger than them (every batch repeats some)."""
    if batch_size > MAX_REPEATS * samples:
        raise ConfigError(f"train.batch_size: {batch_size}, but the training data holds {samples} sample(s): each batch "
                          f"would repeat every sample about {batch_size // samples} times; use at most {samples}")
    if batch_size > samples:
        say(f"warning: train.batch_size={batch_size} is larger than the {samples} training sample(s): every batch holds "
            "some of them more than once")


def train(task: Task, resume: bool = False, stop_after: Optional[int] = None, overwrite: bool = False) -> Path:
    """Run (or resume) `task`; returns its folder. `stop_after` ends early (for tests). SIGINT / SIGTERM stop after
    the current iteration, which is saved (`ppkt.errors.Interrupted`)."""
    task.validate()
    files = task.files
    start_run(files.folder, files.last, resume, overwrite, task.command, files.owned())
    new_folder = not files.folder.exists()
    try:
        with StopRequest() as stop_request, training_process(task.cfg.train.device, task.cfg.train.threads) as (d, device):
            _run(task, d, device, resume, stop_after, stop_request)
    except (UserError, RunFailed):
        if not resume and not files.last.exists():  # stopped by its data before anything worth keeping was written
            remove_run_files(files, new_folder)
        raise
    return files.folder


def remove_run_files(files: RunFiles, folder_too: bool) -> None:
    """Delete what a run that failed before its first checkpoint wrote (and its folder, when the run made it)."""
    for path in files.owned():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    if folder_too and files.folder.is_dir() and not any(files.folder.iterdir()):
        files.folder.rmdir()


def _run(task: Task, d: Dist, device: torch.device, resume: bool, stop_after: Optional[int],
         stop_request: StopRequest) -> None:
    cfg, files, t = task.cfg, task.files, task.cfg.train
    task.say = print if d.main and not task.quiet else (lambda *a, **k: None)
    state = load_checkpoint(files.last, task.format) if resume else None
    if state is not None:
        check_resume(state["config"], cfg, task.safe_keys, files.last)
    task.build(d, device, state is not None)
    check_batch(t.batch_size, len(task.dataset), task.say)
    if device.type == "cpu":
        check_memory(*task.memory(d), task.say)
    names = task.train_scenes
    if state is not None and names is not None and state["train_scenes"] != names:
        raise CheckpointError(f"{files.last}: trained on other scenes than the config selects now "
                              f"({len(state['train_scenes'])} vs {len(names)}); see {files.scenes}")
    start, best = 0, {"iteration": 0, task.score: -1.0} if task.score else {}
    if state is not None:
        load_state_strict(task.trained(), state["model"], files.last, "model")
        task.optimizer.load_state_dict(state["optimizer"])
        task.scheduler.load_state_dict(state["scheduler"])
        if task.scaler is not None and state.get("scaler"):
            task.scaler.load_state_dict(state["scaler"])  # mixed precision: the loss scale continues too
        start, best = int(state["iteration"]), dict(state.get("best", best))
        task.say(f"resuming {files.last} at iteration {start}")
    task.best = best
    if d.main and state is None:  # a resume never rewrites them
        try:
            files.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"the run's folder {files.folder}: cannot make it ({err.strerror}); choose another") from None
        with atomic_path(files.config) as tmp:
            tmp.write_text(config_to_yaml(cfg))
        if names is not None and files.scenes is not None:
            with atomic_path(files.scenes) as tmp:
                tmp.write_text("".join(n + "\n" for n in names))

    def checkpoint(done: int) -> dict:
        ckpt = {"format": task.format, "version": task.version, "iteration": done, "config": config_to_dict(cfg),
                **task.fields(), "model": task.trained().state_dict(), "optimizer": task.optimizer.state_dict(),
                "scheduler": task.scheduler.state_dict(), "ppkt": stamp()}
        if names is not None:
            ckpt["train_scenes"] = names
        if task.score:
            ckpt["best"] = best
        if task.scaler is not None:
            ckpt["scaler"] = task.scaler.state_dict()
        return ckpt

    def save(done: int) -> None:
        if d.main:
            save_atomic(checkpoint(done), files.last)
            task.saved(done)
        d.barrier()

    def validated(done: int, s: Dict[str, Any]) -> None:
        """Log the scores of iteration `done`; keep the best model so far in best.pt (main process)."""
        log.log(done, task.val_values(s))
        if task.score and s[task.score] > best[task.score]:
            best.update({"iteration": done, task.score: s[task.score]})
            save_atomic({**checkpoint(done), "val": task.best_values(s)}, files.best)

    total = t.iterations
    stop = total if stop_after is None else min(total, stop_after)
    sampler = IterationBatchSampler(len(task.dataset), t.batch_size, t.seed, start, stop, d.rank, d.world_size)
    loader = DataLoader(task.dataset, batch_sampler=sampler, collate_fn=task.collate, num_workers=t.workers,
                        worker_init_fn=one_thread_worker, pin_memory=device.type == "cuda", persistent_workers=False)
    model = task.model
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if d.world_size > 1 else model
    log = MetricsLog(files.metrics, start, files.tensorboard) if d.main else None
    if start:
        stop_request.already_saved = f"the checkpoint of iteration {start} ({files.last})"
    eval_every, report_every = getattr(t, "eval_every", 0), task.report_every or t.log_every
    t_last, since, timer = time.perf_counter(), 0, IterationTimer()
    model.train()
    with Progress(total, task.title, initial=start, enabled=d.main and not task.quiet) as progress:
        task.write = progress.write
        stop_request.iteration = start + 1  # the iteration under way, loading included: a first Ctrl-C names it
        for it, batch in zip(range(start, stop), loader):
            timer.batch_ready()
            loss = task.loss(net, batch, it, device)
            used = optimizer_step(loss, task.optimizer, task.scheduler, it, task.hint, task.scaler)
            lrs = {g.get("name", str(i)): lr for i, (g, lr) in enumerate(zip(task.optimizer.param_groups, used))}
            timer.step_done()
            since += task.count(batch) * d.world_size
            progress.update(1)
            done = it + 1
            if done % t.log_every == 0 or done == stop or it == start:
                values = task.log_values(loss, lrs, d)  # every process: it may hold a collective
                if d.main:
                    now = time.perf_counter()
                    values.update({task.rate: since / max(now - t_last, 1e-9), **timer.report()})
                    t_last, since = now, 0
                    log.log(done, values)
                    if done % report_every == 0 or done == stop or it == start:
                        progress.report(done, **task.report(values))
            if task.val and eval_every and done % eval_every == 0 and done < total:
                if d.main:
                    s = task.evaluate(None)
                    validated(done, s)
                    progress.write(f"iteration {done}: {task.val_line(s)}" + (
                        f"  (best: iteration {best['iteration']}, {task.score_name} {100 * best[task.score]:.2f})" if task.score else ""))
                d.barrier()
            saved_now = done % t.checkpoint_every == 0 or done == stop
            if saved_now:
                save(done)
            stop_request.after_iteration(done, stop, total, saved_now, save, files.last,
                                         f"{task.resume_command()} --resume", device, log.close if d.main else lambda: None)
            stop_request.iteration = done + 1
            timer.iteration_done()
    task.after_loop(d)
    finished = stop == total
    if d.main:
        s = None
        if finished and task.val:
            s = task.evaluate(files.eval)
            validated(stop, s)
            save_atomic(checkpoint(stop), files.last)  # last.pt records the final best too
            task.saved(stop)
            task.say(task.table(s))
        if finished:
            task.finish(s)
        log.close()
        plot_loss_curve(files.metrics, files.curve, title=task.curve_title, chance=task.chance(d), ylabel=task.ylabel,
                        smooth=task.smooth)
        for line in task.summary(finished):
            task.say(line)
    d.barrier()
