"""Typed configuration of a pretraining run: dataclasses, loaded from YAML with `key=value` overrides.

YAML is read with a safe loader (OmegaConf). Unknown keys and values of the wrong type are errors
that name the key, so a typo in a config never silently falls back to a default.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ppkt.errors import ConfigError, UserError  # noqa: F401  (ConfigError: raised here, imported from here by many)


@dataclass
class DataConfig:
    roots: List[str] = field(default_factory=list)  # frame folders, or folders holding many of them
    layout: str = "auto"  # "auto" | "scannet" | "7scenes"
    depth_scale: float = 1000.0  # depth units per metre (1000 for millimetre PNGs)
    max_depth: float = 10.0  # metres; farther depth is treated as invalid
    stride: int = 1  # keep every k-th frame of each folder
    image_size: List[int] = field(default_factory=lambda: [480, 640])  # [H, W] pixels fed to the teacher
    voxel_size: float = 0.025  # metres
    # 3D frame of the points: "camera" (up = -y; any poses or none) or "world" (the pose's frame, which must be
    # z-up, as ScanNet's and the synthetic world's are, and as the fine-tuning scenes are; needs poses)
    frame: str = "camera"
    overlaps: Optional[str] = None  # loss.name=pointcontrast: the overlapping frames file of `ppkt overlaps` (folders below roots)
    features: str = "color"  # what the student reads per voxel (ppkt.data.features): color | color+normal | normal | none


@dataclass
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip (image, depth, intrinsics)
    resize: List[float] = field(default_factory=lambda: [0.8, 1.2])  # random resize factor range
    rotation: float = math.pi  # max |angle| (radians) of the rotation about the up axis
    scale: List[float] = field(default_factory=lambda: [0.9, 1.1])  # random isotropic scaling range
    elastic: List[List[float]] = field(default_factory=lambda: [[0.2, 0.4], [0.8, 1.6]])  # [granularity m, magnitude m]
    color_dropout: float = 0.0  # probability that a frame's colour reaches the student as the constant of no colour
    enabled: bool = True


@dataclass
class TeacherConfig:
    arch: str = "resnet50"
    weights: str = "imagenet"  # "imagenet" | "none" | path to a checkpoint
    stage: Optional[str] = None  # None = the deepest stage (layer4 for ResNets)
    # folder of precomputed teacher features (`ppkt cache-teacher`) read instead of running the teacher; None = run it.
    # Exact for flips; needs augment.resize=[1, 1] (see ppkt.data.teacher_cache)
    cache: Optional[str] = None


@dataclass
class StudentConfig:
    arch: str = "SR-UNet34"  # SR-UNet14 | SR-UNet18 | SR-UNet34
    channels: Optional[List[int]] = None  # None = (32, 64, 128, 256, 256, 128, 96, 96)


@dataclass
class LossConfig:
    # "ppnce": PPKT (teacher pixels against student points) | "pointcontrast": PointInfoNCE between two overlapping
    # frames of a scan (needs data.overlaps from `ppkt overlaps` and data.frame=world; no teacher) | the paper's baselines
    # (ppkt.models.baselines): "ppkd" (per-point KL to a segmentation teacher: teacher.weights = a `ppkt teacher train`
    # file), "global_kd" (pooled encoder, KL to EfficientNet-Lite0's ImageNet logits), "gupta" (pooled L2),
    # "crd" (pooled contrastive, memory bank); the last three pretrain the student's encoder only
    name: str = "ppnce"
    embed_dim: int = 128
    n_sub: int = 4096  # pixel-point pairs (ppnce) or matched point pairs (pointcontrast) sampled across the batch
    temperature: float = 0.04  # of the contrastive losses (ppnce, pointcontrast, crd); PointContrast's and CRD's is 0.07
    kd_temperature: float = 4.0  # ppkd and global_kd: T of the softened class distributions (Hinton KD)
    bank_size: int = 4096  # crd: earlier frames' 2D embeddings kept as extra negatives
    match_radius: float = 1.5  # pointcontrast: matches are nearest neighbours within this many voxels
    projection: str = "upl"  # "upl" (1x1 conv + bilinear upsampling) | "pl" (1x1 conv only)
    # several processes: contrast each process's n_sub points with the sampled pixels of ALL processes (world_size *
    # n_sub negatives, ppkt.losses.gathered) instead of its own n_sub (SLidR-style, the default)
    gather_negatives: bool = False


@dataclass
class OptimConfig:
    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_gamma: float = 0.99  # exponential decay: lr * lr_gamma ** (iteration / lr_step)
    lr_step: int = 1000


@dataclass
class TrainConfig:
    iterations: int = 60000
    batch_size: int = 24  # frames per iteration, over all processes
    workers: int = 4
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = False  # mixed precision on CUDA (ignored on the CPU)
    amp_dtype: str = "float16"  # "float16" | "bfloat16": autocast dtype of train.amp (see ppkt.train.distributed)
    sync_bn: bool = False  # several CUDA processes: the student's BatchNorm over the whole batch (SyncBatchNorm)
    threads: int = 0  # torch CPU threads, 0 = torch's default
    log_every: int = 10
    checkpoint_every: int = 1000
    out_dir: str = "runs/pretrain"


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ------------------------------------------------------------------------------------------------ checks
MAX_VOXEL = 0.5  # metres


class Checks:
    """Collects `key: problem` lines; `done()` raises one ConfigError listing them all."""

    def __init__(self) -> None:
        self.problems: List[str] = []

    def need(self, ok: bool, key: str, problem: str) -> None:
        if not ok:
            self.problems.append(f"{key}: {problem}")

    def positive(self, value: Any, key: str) -> None:
        self.need(isinstance(value, (int, float)) and value > 0, key, f"must be > 0, got {value}")

    def voxel(self, value: Any, key: str = "data.voxel_size") -> None:
        """A voxel size a room can use: > 0 and at most MAX_VOXEL metres (the SR-UNets downsample 16 times, so a
        larger voxel leaves a room a cell or two at the deepest level)."""
        self.need(isinstance(value, (int, float)) and 0 < value <= MAX_VOXEL, key,
                  f"must be > 0 and <= {MAX_VOXEL} metres (a room is a few metres; the networks downsample 16 times), "
                  f"got {value}")

    def at_least(self, value: Any, low: int, key: str) -> None:
        self.need(isinstance(value, int) and value >= low, key, f"must be an integer >= {low}, got {value}")

    def choice(self, value: Any, allowed: Sequence[str], key: str) -> None:
        self.need(value in allowed, key, f"must be one of {', '.join(map(str, allowed))}; got {value!r}")

    def range_pair(self, value: Sequence[float], key: str) -> None:
        self.need(len(value) == 2 and 0 < value[0] <= value[1], key, f"must be [low, high] with 0 < low <= high, got {list(value)}")

    def device(self, value: str, key: str) -> None:
        """The device exists here (asks torch only when the value names CUDA)."""
        from ppkt.device import device_problem

        problem = device_problem(value)
        self.need(problem is None, key, str(problem))

    def channels(self, value: Optional[Sequence[int]], key: str) -> None:
        self.need(value is None or (len(value) == 8 and min(value) >= 1), key,
                  f"must be null or 8 positive widths (4 encoder + 4 decoder stages), got {value}")

    def done(self) -> None:
        if self.problems:
            raise ConfigError("\n".join(self.problems))


def check_data(d: DataConfig, c: Checks) -> None:
    c.need(len(d.roots) > 0, "data.roots", "is empty; give the frame folders to pretrain on, e.g. data.roots=[data/7scenes-redkitchen]")
    c.choice(d.layout, ("auto", "scannet", "7scenes"), "data.layout")
    c.positive(d.depth_scale, "data.depth_scale")
    c.positive(d.max_depth, "data.max_depth")
    c.at_least(d.stride, 1, "data.stride")
    c.need(len(d.image_size) == 2 and min(d.image_size) >= 1, "data.image_size", f"must be [H, W] in pixels, both >= 1, got {list(d.image_size)}")
    c.voxel(d.voxel_size)
    c.choice(d.frame, ("camera", "world"), "data.frame")
    from ppkt.data.features import FEATURES

    c.choice(d.features, tuple(FEATURES), "data.features")


def check_augment(a: AugmentConfig, c: Checks) -> None:
    c.need(0 <= a.flip <= 1, "augment.flip", f"is a probability, must be in [0, 1], got {a.flip}")
    c.need(0 <= a.color_dropout <= 1, "augment.color_dropout", f"is a probability, must be in [0, 1], got {a.color_dropout}")
    c.range_pair(a.resize, "augment.resize")
    c.need(a.rotation >= 0, "augment.rotation", f"must be >= 0 radians, got {a.rotation}")
    c.range_pair(a.scale, "augment.scale")
    c.need(all(len(p) == 2 and min(p) > 0 for p in a.elastic), "augment.elastic",
           f"must be a list of [granularity, magnitude] pairs in metres, all > 0, got {[list(p) for p in a.elastic]}")


def check_teacher(t: TeacherConfig, c: Checks) -> None:
    from ppkt.models.catalog import TEACHER_ARCHS, teacher_key, teacher_stages

    arch = teacher_key(t.arch)
    c.choice(arch, TEACHER_ARCHS, "teacher.arch")
    if arch in TEACHER_ARCHS and t.stage is not None:
        c.choice(t.stage, teacher_stages(arch), "teacher.stage")
    if t.weights not in ("imagenet", "none"):
        c.need(Path(t.weights).expanduser().is_file(), "teacher.weights", f"file {t.weights} not found (or use imagenet / none)")


def check_teacher_cache(t: TeacherConfig, a: AugmentConfig, c: Checks) -> None:
    """teacher.cache: a folder name, and augmentations a cache serves exactly (no random resize)."""
    if t.cache is None:
        return
    c.need(t.cache.strip() != "", "teacher.cache", "is empty; give the cache folder, or null to run the teacher")
    c.need(not a.enabled or list(a.resize) == [1.0, 1.0], "augment.resize",
           f"must be [1, 1] with teacher.cache, got {list(a.resize)}: a random resize changes the teacher's input, "
           "which a cache cannot hold exactly (set augment.resize=[1,1], or teacher.cache=null)")


def check_student(arch: str, channels: Optional[Sequence[int]], c: Checks, section: str = "student") -> None:
    from ppkt.models.catalog import SR_UNET_LAYERS

    c.choice(arch, tuple(SR_UNET_LAYERS), f"{section}.arch")
    c.channels(channels, f"{section}.channels")


def check_loss(l: LossConfig, c: Checks) -> None:
    from ppkt.models.catalog import PROJECTIONS

    c.at_least(l.embed_dim, 1, "loss.embed_dim")
    c.at_least(l.n_sub, 2, "loss.n_sub")
    c.positive(l.temperature, "loss.temperature")
    c.choice(l.projection, PROJECTIONS, "loss.projection")
    c.choice(l.name, LOSSES, "loss.name")
    c.positive(l.match_radius, "loss.match_radius")
    c.positive(l.kd_temperature, "loss.kd_temperature")
    c.at_least(l.bank_size, 0, "loss.bank_size")


LOSSES = ("ppnce", "pointcontrast", "ppkd", "global_kd", "gupta", "crd")


def check_baselines(cfg: "PretrainConfig", c: Checks) -> None:
    """What the baselines need from the teacher section."""
    from ppkt.models.catalog import teacher_key

    name, t = cfg.loss.name, cfg.teacher
    if name == "ppkd":
        c.need(t.weights not in ("imagenet", "none"), "teacher.weights", "loss.name=ppkd needs a 2D segmentation "
               "teacher: the file `ppkt teacher train` writes (e.g. runs/teacher2d/teacher.pt)")
    if name == "global_kd":
        c.need(teacher_key(t.arch) == "efficientnet_lite0", "teacher.arch",
               f"loss.name=global_kd distils EfficientNet-Lite0's ImageNet logits; set teacher.arch=efficientnet_lite0 "
               f"(got {t.arch})")
    if name in ("ppkd", "global_kd"):
        c.need(t.cache is None, "teacher.cache", f"holds feature maps, not the class logits loss.name={name} needs; "
                                                 "unset it")


def check_pointcontrast(cfg: "PretrainConfig", c: Checks) -> None:
    """What loss.name=pointcontrast needs from the other sections."""
    if cfg.loss.name != "pointcontrast":
        return
    c.need(cfg.data.overlaps is not None, "data.overlaps", "is needed by loss.name=pointcontrast: the file of "
                                                      "`ppkt overlaps ROOT --out FILE`")
    c.need(cfg.data.frame == "world", "data.frame", "must be world for loss.name=pointcontrast (the views are "
                                                    "matched in world coordinates)")
    c.need(cfg.teacher.cache is None, "teacher.cache", "is not used by loss.name=pointcontrast (no teacher); unset it")
    c.need(cfg.data.features == "color" and not cfg.augment.color_dropout, "data.features",
           "loss.name=pointcontrast reads colour only (data.features=color, augment.color_dropout=0)")


def check_optim(o: OptimConfig, c: Checks) -> None:
    c.positive(o.lr, "optim.lr")
    c.need(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    c.need(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    c.need(0 < o.lr_gamma <= 1, "optim.lr_gamma", f"must be in (0, 1], got {o.lr_gamma}")
    c.at_least(o.lr_step, 1, "optim.lr_step")


def check_train(t: Any, c: Checks) -> None:
    """The run keys shared by pretraining and fine-tuning (TrainConfig, FinetuneTrainConfig)."""
    c.at_least(t.iterations, 1, "train.iterations")
    c.at_least(t.batch_size, 1, "train.batch_size")
    c.at_least(t.workers, 0, "train.workers")
    c.at_least(t.threads, 0, "train.threads")
    c.at_least(t.log_every, 1, "train.log_every")
    c.at_least(t.checkpoint_every, 1, "train.checkpoint_every")
    c.device(t.device, "train.device")
    c.need(t.out_dir.strip() != "", "train.out_dir", "is empty")


def check_pretrain_train(t: TrainConfig, c: Checks) -> None:
    """The pretraining-only run keys: mixed precision and SyncBatchNorm."""
    c.choice(t.amp_dtype, ("float16", "bfloat16"), "train.amp_dtype")
    on_cpu = t.sync_bn and (t.device == "cpu" or (t.device == "auto" and not _cuda_usable()))
    c.need(not on_cpu, "train.sync_bn", "SyncBatchNorm needs CUDA (torch's SyncBatchNorm refuses CPU "
           f"tensors), but train.device={t.device} runs on the CPU here; set train.sync_bn=false")


def _cuda_usable() -> bool:
    import torch

    return torch.cuda.is_available()


def validate_pretrain(cfg: PretrainConfig) -> PretrainConfig:
    """Every check that needs no data and no model, one function per section; ConfigError lists all problems."""
    c = Checks()
    check_data(cfg.data, c)
    check_augment(cfg.augment, c)
    check_teacher(cfg.teacher, c)
    check_teacher_cache(cfg.teacher, cfg.augment, c)
    check_student(cfg.student.arch, cfg.student.channels, c)
    check_loss(cfg.loss, c)
    check_optim(cfg.optim, c)
    check_train(cfg.train, c)
    check_pretrain_train(cfg.train, c)
    check_pointcontrast(cfg, c)
    check_baselines(cfg, c)
    c.done()
    return cfg


RENAMED = {"data.pairs": "data.overlaps"}  # keys renamed since configs were saved: old -> new


def upgrade_saved(config: Mapping[str, Any]) -> dict:
    """A config saved before keys were renamed (a checkpoint's, a benchmark record's) with today's names (`RENAMED`)."""
    out = json.loads(json.dumps(config))
    for old, new in RENAMED.items():
        (section, key), (_, new_key) = old.split("."), new.split(".")
        if isinstance(out.get(section), dict) and key in out[section]:
            out[section][new_key] = out[section].pop(key)
    return out


# the kinds of config file: schema class name -> (what it configures, the command that takes it)
KINDS = {"PretrainConfig": ("pretraining", "ppkt pretrain"), "FinetuneConfig": ("segmentation fine-tuning", "ppkt finetune"),
         "DetectionConfig": ("detection fine-tuning", "ppkt finetune --task detection")}


def config_kind(tree: Mapping[str, Any]) -> Optional[str]:
    """The schema name (a key of KINDS) a loaded config file is written for, from its sections; None if unclear."""
    if any(k in tree for k in ("teacher", "student", "loss", "augment")):
        return "PretrainConfig"
    model = tree.get("model") or {}
    if "eval" in tree or (isinstance(model, Mapping) and "num_proposals" in model):
        return "DetectionConfig"
    if "model" in tree or isinstance(tree.get("data"), Mapping) and "root" in tree["data"]:
        return "FinetuneConfig"
    return None


def _problem(err: OmegaConfBaseException) -> str:
    """`<key>: <problem>` of an OmegaConf error, in words, without its internals (reference_type, object_type)."""
    key = getattr(err, "full_key", None) or "?"
    msg = str(getattr(err, "msg", None) or err).splitlines()[0]
    m = re.match(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", msg)
    if m:
        kind = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false"}.get(m.group(3), m.group(3))
        return f"{key}: {m.group(1)!r} is not {kind}"
    m = re.match(r"Value '(.*)' is not a valid bool", msg)
    if m:
        return f"{key}: {m.group(1)!r} is not true or false"
    m = re.match(r"Key '(.*)' not in '(\w+)'(?:\. Did you mean: '(.*)'\?)?", msg)
    if m:
        return f"{key}: no such key" + (f" (did you mean {m.group(3)}?)" if m.group(3) else "")
    if "Cannot convert 'ListConfig' to string" in msg:
        return f"{key}: takes one value, not a list"
    if "is not a ListConfig" in msg or "is not a list" in msg.lower():
        return f"{key}: must be a list, e.g. {key}=[a,b]"
    return f"{key}: {msg}"


def _line_of(text: str, key: str) -> str:
    """':<line>' of the first line that sets the last part of dotted `key` in YAML `text` ('' if none does)."""
    leaf = key.rsplit(".", 1)[-1]
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(leaf)}\s*:", line):
            return f":{i}"
    return ""


def _as_list(schema_cfg: Any, key: str, value: Any) -> Any:
    """A single value where the schema has a list: [value] (so `data.roots=/path` means one folder)."""
    node = OmegaConf.select(schema_cfg, key, default=None)
    return [value] if isinstance(node, ListConfig) and not isinstance(value, (list, ListConfig)) and value is not None \
        else value


def _read_yaml(path: Path, schema: type) -> DictConfig:
    """The file's mapping, with YAML syntax errors named by file and line, a top level that is not a mapping, a config
    of another kind and renamed keys refused, and single values where the schema has lists made one-element lists."""
    import yaml

    text = path.read_text()
    try:
        top = yaml.safe_load(text)
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if top is None:
        return OmegaConf.create({})
    if not isinstance(top, dict) or not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (data:, model:, train:, ...), "
                          f"not a {type(top).__name__}")
    kind = config_kind(top)
    if kind is not None and kind != schema.__name__ and schema.__name__ in KINDS:
        what, command = KINDS[kind]
        raise ConfigError(f"{path}: this is a {what} config (`{command}` takes it), not a {KINDS[schema.__name__][0]} "
                          "config")
    for old, new in RENAMED.items():
        if OmegaConf.select(loaded, old, default=None) is not None:
            raise ConfigError(f"{path}: {old} is now called {new}; rename it")
    base = OmegaConf.structured(schema)
    for section, values in top.items():
        if isinstance(values, dict):
            for key, value in values.items():
                fixed = _as_list(base, f"{section}.{key}", value)
                if fixed is not value:
                    loaded[section][key] = fixed
    return loaded


def load_config(path: str | Path | None, overrides: Sequence[str] = (), schema: type = PretrainConfig) -> Any:
    """Schema defaults <- YAML file <- `a.b=value` overrides; returns a typed `schema` instance (not yet validated:
    `validate_pretrain` / `ppkt.train.finetune_config.validate_finetune` check the values).

    Every problem is a ConfigError naming the file (and line) or the override and the key: YAML syntax, a top level
    that is not a mapping, a config of another kind, an unknown key, a value of the wrong type, a renamed key. A single
    value where a list is expected is taken as a one-element list (`data.roots=/path`)."""
    merged = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        loaded = _read_yaml(path, schema)
        try:
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{path}{_line_of(path.read_text(), getattr(err, 'full_key', '') or '')}: "
                              f"{_problem(err)}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.iterations=100")
        key, value = item.split("=", 1)
        if key in RENAMED:
            raise ConfigError(f"override {item!r}: {key} is now called {RENAMED[key]}")
        try:
            one = OmegaConf.from_dotlist([item])
            if isinstance(OmegaConf.select(merged, key, default=None), ListConfig) and not value.startswith("["):
                one = OmegaConf.from_dotlist([f"{key}=[{value}]"])
            merged = OmegaConf.merge(merged, one)
        except OmegaConfBaseException as err:
            raise ConfigError(f"override {item}: {_problem(err)}") from None
    try:
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path or 'overrides'}: {_problem(err)}") from None


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config dataclass (for checkpoints and logs)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def config_to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
