"""`ppkt pretrain`: the PPKT training loop (frozen teacher; student, g2D and g3D learn).

Every random choice is derived from (seed, iteration) or (seed, stream position), so a run stopped at a
checkpoint and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, List, Optional, Set, Tuple

import torch
from torch.utils.data import Dataset

from ppkt.checkpoint import BACKBONE_FORMAT, PRETRAIN_FORMAT, save_atomic
from ppkt.config import ConfigError, PretrainConfig, validate_pretrain
from ppkt.data.features import in_channels
from ppkt.data.pairs import PixelPointFrames, collate_pairs
from ppkt.data.teacher_cache import TeacherCache
from ppkt.data.views import MatchedViews, collate_views
from ppkt.models.baselines import CRD, ENCODER, FRAME_LEVEL, PPKD, GlobalKD, Gupta
from ppkt.models.heads import UPL, Projection3D
from ppkt.models.catalog import teacher_key
from ppkt.models.pointcontrast import PointContrast
from ppkt.models.ppkt import PPKT
from ppkt.models.sparse_unet import build_sparse_unet
from ppkt.models.seg_teacher import load_seg_teacher
from ppkt.models.teacher import ImageClassifier, build_teacher
from ppkt.provenance import stamp
from ppkt.train.distributed import Dist, mixed_precision, sync_batchnorm
from ppkt.train.run import RunFiles, Task, train
from ppkt.train.run_dir import PRETRAIN_SAFE_KEYS
from ppkt.train.schedule import exponential_factor, lambda_schedule

def build_model(cfg: PretrainConfig) -> torch.nn.Module:
    """From a validated config: loss.name=ppnce: teacher (frozen) + student + g2D (UPL, or PL for loss.projection=pl)
    + g3D (PPKT); loss.name=pointcontrast: student + g3D (PointContrast, no 2D network); the baselines of
    `ppkt.models.baselines`: their teacher (frozen) + student + their heads."""
    name, l = cfg.loss.name, cfg.loss

    def student() -> torch.nn.Module:
        return build_sparse_unet(cfg.student.arch, in_channels=in_channels(cfg.data.features),
                                 channels=cfg.student.channels)

    if name == "pointcontrast":
        s = student()
        return PointContrast(s, Projection3D(s.out_channels, l.embed_dim), l.n_sub, l.temperature)
    if name == "ppkd":
        teacher = load_seg_teacher(cfg.teacher.weights)
        if teacher.arch != teacher_key(cfg.teacher.arch):
            raise ConfigError(f"teacher.arch: {cfg.teacher.weights} is a {teacher.arch} segmentation teacher, but "
                              f"teacher.arch={cfg.teacher.arch}; set teacher.arch={teacher.arch}")
        return PPKD(teacher, student(), teacher.num_classes, l.n_sub, l.kd_temperature)
    if name == "global_kd":
        teacher = ImageClassifier(cfg.teacher.weights)
        return GlobalKD(teacher, student(), teacher.num_classes, l.kd_temperature)
    # built in this order, so that a seed gives the same initial weights as always
    teacher = build_teacher(cfg.teacher.arch, cfg.teacher.weights, cfg.teacher.stage)
    if name == "gupta":
        return Gupta(teacher, student())
    if name == "crd":
        return CRD(teacher, student(), l.embed_dim, l.bank_size, l.temperature)
    s = student()
    g2d = UPL(teacher.out_channels, l.embed_dim, upsample=l.projection == "upl")
    g3d = Projection3D(s.out_channels, l.embed_dim)
    return PPKT(teacher, s, g2d, g3d, l.n_sub, l.temperature, l.gather_negatives)


def build_dataset(cfg: PretrainConfig, cache: Optional[TeacherCache]) -> Tuple[Dataset, Callable]:
    """The training samples and their collate function for loss.name."""
    if cfg.loss.name == "pointcontrast":
        return MatchedViews(cfg.data, cfg.augment, cfg.data.overlaps, cfg.loss.match_radius), collate_views
    return PixelPointFrames(cfg.data, cfg.augment, cache), collate_pairs


def trainable(model: torch.nn.Module) -> torch.nn.ModuleDict:
    """The modules pretraining updates: every child but the teacher (frozen, rebuilt from the config, never saved)."""
    return torch.nn.ModuleDict({name: m for name, m in model.named_children() if name != "teacher"})


def exponential_schedule(optimizer: torch.optim.Optimizer, gamma: float, step: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr(i) = lr * gamma ** (i / step) (`ppkt.train.schedule.exponential_factor`)."""
    return lambda_schedule(optimizer, lambda i: exponential_factor(i, gamma, step))


def backbone_export(cfg: PretrainConfig, model: torch.nn.Module, iteration: int, frames: Optional[int] = None,
                    loss: Optional[float] = None) -> dict:
    """The student backbone alone, ready for fine-tuning (no heads, no optimiser); for the frame-level baselines
    its encoder only ("part": "encoder"), the part they train. "pretrain" says what made it: iteration, input
    features, voxel size (metres), the data folders and frame count, the last loss, ppkt's version and commit."""
    name = cfg.loss.name
    state = model.student.state_dict()
    about = {"iteration": iteration, "input_features": cfg.data.features, "color_dropout": cfg.augment.color_dropout,
             "voxel_size": cfg.data.voxel_size,
             "data_roots": list(cfg.data.roots), "frames": frames, "loss": loss, **stamp()}
    if name != "ppnce":  # (PPKT's exports say nothing more, as before the baselines existed)
        about.update(method=name, part="encoder" if name in FRAME_LEVEL else "whole")
    if name in FRAME_LEVEL:
        state = {k: v for k, v in state.items() if k.startswith(ENCODER)}
    if name != "pointcontrast":
        about.update(teacher=cfg.teacher.arch, teacher_weights=cfg.teacher.weights)
    return {"format": BACKBONE_FORMAT, "arch": cfg.student.arch, "in_channels": in_channels(cfg.data.features),
            "channels": list(model.student.channels), "state_dict": state, "pretrain": about}


class Pretraining(Task):
    """PPKT pretraining (and the baselines of loss.name): frames -> pixel-point pairs -> the loss of `build_model`.
    Every save also writes backbone.pth, the student for fine-tuning (`backbone_export`)."""

    command, format, safe_keys = "pretrain", PRETRAIN_FORMAT, PRETRAIN_SAFE_KEYS
    title, rate = "pretrain", "frames_per_s"
    hint = "lower optim.lr or check the input frames"
    smooth = False

    def __init__(self, cfg: PretrainConfig, files: RunFiles):
        super().__init__(cfg, files)
        self.curve_title, self.ylabel = f"pretraining ({cfg.loss.name})", f"{cfg.loss.name} loss"
        self.bad_frames: Set[str] = set()  # unusable frames this process replaced (each counted once)
        self.last_loss: Optional[float] = None  # the loss of the last iteration, for the files' metadata

    def validate(self) -> None:
        validate_pretrain(self.cfg)

    def build(self, d: Dist, device: torch.device, resumed: bool) -> None:
        cfg = self.cfg
        cache = TeacherCache(cfg.teacher.cache) if cfg.teacher.cache else None  # precomputed teacher features
        self.dataset, self.collate = build_dataset(cfg, cache)  # first: a wrong data path is the most common error
        torch.manual_seed(cfg.train.seed)  # initial weights
        self.model = model = build_model(cfg).to(device)
        model.student = sync_batchnorm(model.student, cfg.train.sync_bn, d)  # before DDP and the optimiser
        if cache is not None:
            cache.check_teacher(model.teacher)  # made by these very teacher weights
        params = [p for p in trainable(model).parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)
        self.scheduler = exponential_schedule(self.optimizer, cfg.optim.lr_gamma, cfg.optim.lr_step)
        self.amp, self.scaler = mixed_precision(cfg.train.amp, cfg.train.amp_dtype, device)
        self.d = d

    def trained(self) -> torch.nn.Module:
        return trainable(self.model)

    def loss(self, net, batch, it, device):
        for frame, reason in batch.skipped:
            if frame not in self.bad_frames:
                self.bad_frames.add(frame)
                self.write(f"warning: unusable frame replaced by the next usable one: {frame}: {reason}")
        with self.amp:
            loss = net(batch.to(device), torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + it))
        self.last_loss = float(loss.detach()) if torch.isfinite(loss.detach()) else None
        return loss

    def count(self, batch) -> int:
        return batch.batch_size

    def log_values(self, loss, lrs, d):
        skipped = count_distinct(self.bad_frames, d)  # every process takes part
        return {"loss": loss.item(), "lr": next(iter(lrs.values())), "skipped_frames": skipped}

    def report(self, values):
        return {"loss": values["loss"], "lr": values["lr"], "fps": values["frames_per_s"]}

    def fields(self):
        return {"loss": self.last_loss}

    def saved(self, done: int) -> None:
        """The export of the student beside each checkpoint: backbone.partial.pth while the run is under way (or
        stopped), backbone.pth once it has done every iteration (the partial one is then removed)."""
        finished = done >= self.cfg.train.iterations
        final, partial = self.files.folder / "backbone.pth", self.files.folder / "backbone.partial.pth"
        save_atomic(backbone_export(self.cfg, self.model, done, len(self.dataset), self.last_loss),
                    final if finished else partial)
        if finished:
            partial.unlink(missing_ok=True)

    def after_loop(self, d: Dist) -> None:
        self.skipped = count_distinct(self.bad_frames, d)

    def memory(self, d: Dist) -> Tuple[Optional[int], str]:
        """About 4 KB per pixel of a process's batch, plus 0.5 GiB: measured peak RSS 1.22 GiB for the demo (4 frames of
        240 x 320) and 2.39 GiB for the paper setting (2 frames of 480 x 640; docs/benchmarks.md)."""
        (h, w), batch = self.cfg.data.image_size, self.cfg.train.batch_size // d.world_size
        return (2**29 + 4096 * batch * h * w,
                f"train.batch_size={self.cfg.train.batch_size} at data.image_size=[{h}, {w}]")

    def chance(self, d: Dist) -> Optional[float]:
        l = self.cfg.loss
        pixels = l.n_sub * (d.world_size if l.gather_negatives else 1)  # candidates of each point
        return math.log(pixels) if l.name in ("ppnce", "pointcontrast") else None  # an uninformed model's loss

    def summary(self, finished: bool) -> List[str]:
        if self.skipped:
            print(f"replaced {self.skipped} unusable frame(s) by usable ones; see the warnings above", file=sys.stderr)
        f = self.files
        export = f.folder / ("backbone.pth" if finished else "backbone.partial.pth")
        return [f"checkpoint: {f.last}", f"backbone for fine-tuning: {export}" + ("" if finished else
                " (of a run not finished: `--resume` goes on)"), f"metrics: {f.metrics}  curve: {f.curve}"]


def pretrain(cfg: PretrainConfig, resume: bool = False, stop_after: Optional[int] = None, overwrite: bool = False) -> Path:
    """Run (or resume) pretraining (`ppkt.train.run.train`); returns the output folder. `stop_after` ends early (for
    tests). Checked before any work and before any folder is created: the config (`validate_pretrain`), the output
    folder, and on `resume` the config against the checkpoint's (only `PRETRAIN_SAFE_KEYS` may change)."""
    files = RunFiles.in_folder(cfg.train.out_dir, exports=("backbone.pth", "backbone.partial.pth"))
    return train(Pretraining(cfg, files), resume, stop_after, overwrite)


def count_distinct(frames: Set[str], d: Dist) -> int:
    """Number of distinct frames in the union of every process's set (a collective: all processes call it)."""
    if d.world_size == 1:
        return len(frames)
    gathered: List[Optional[Set[str]]] = [None] * d.world_size
    torch.distributed.all_gather_object(gathered, frames)
    return len(set().union(*gathered))
