"""GPU check: on a CUDA machine, in a few minutes, the parts of ppkt that only a GPU exercises.

    python benchmarks/gpu_check.py [--iterations 50] [--batch-size 8] [--dtypes float16 bfloat16] [--json FILE]

1. back-projection on CUDA: tests/geometry/test_backproject.py::test_cuda, and a real frame back-projected on CUDA
   against the CPU;
2. spconv on CUDA (float32; spconv's own algorithm) against the CPU float64 reference (ppkt.models.spconv_cpu's
   patched Native path) for the student's three layer kinds: SubMConv3d k3, SparseConv3d k2 s2, SparseInverseConv3d
   k2, compared densely (the site order may differ); tolerance 5e-3 of the output's largest value (TF32 level; plain
   float32 gives about 1e-6);
3. a DataLoader with pin_memory=True gives batches in page-locked memory (PairBatch.pin_memory);
4. per dtype: mixed-precision pretraining (`ppkt.train.pretrain.pretrain`, train.amp=true) with the paper config
   (configs/pretrain_scannet.yaml: ResNet-50 layer4 + UPL, SR-UNet34, 480x640, 2.5 cm) on data/7scenes-redkitchen,
   batch 8, teacher.weights=imagenet if the ResNet-50 file is in the torch hub cache, else none: finite loss, falling
   loss (median of the last 5 iterations below the first 5), the median iteration time (from the logged frames/s,
   data loading included) and the peak CUDA memory (torch.cuda.max_memory_allocated).

Prints a table; --json FILE writes the same rows. Exit status: 0 every check passed, 1 a check failed, 77 no usable
CUDA device here (nothing is checked; the message says so, and --json records it).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List

import torch

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "data" / "7scenes-redkitchen"
NO_CUDA = 77
SPCONV_TOL = 5e-3


def check_backproject(device: str = "cuda") -> str:
    """The pytest CUDA case, then a real frame on `device` vs the CPU (same pixels, points within 1e-5 m)."""
    from ppkt.data.frames import open_frame_folder
    from ppkt.geometry.backproject import backproject

    spec = importlib.util.spec_from_file_location("test_backproject", ROOT / "tests" / "geometry" / "test_backproject.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if device == "cuda":
        module.test_cuda()
    frame = open_frame_folder(FRAMES, layout="7scenes")[0]
    depth, K = torch.from_numpy(frame.depth), torch.from_numpy(frame.intrinsics).float()
    pose, color = torch.from_numpy(frame.pose).float(), torch.from_numpy(frame.color)
    cpu = backproject(depth, K, features=color, pose=pose)
    gpu = backproject(depth.to(device), K.to(device), features=color.to(device), pose=pose.to(device))
    assert torch.equal(gpu.pixel_index.cpu(), cpu.pixel_index) and torch.equal(gpu.features.cpu(), cpu.features)
    err = (gpu.points.cpu() - cpu.points).abs().max().item()
    assert err < 1e-5, f"points differ by {err:.2e} m"
    passed = "test_cuda passed; " if device == "cuda" else ""
    return f"{passed}real frame: {len(cpu.points)} points, max |{device} - CPU| {err:.1e} m"


def random_cloud(n: int, side: int, channels: int, gen: torch.Generator):
    """(coords (2n, 4) int32 [b, x, y, z], unique per cloud; feats (2n, channels) float64) for 2 clouds."""
    rows = []
    for b in range(2):
        flat = torch.randperm(side**3, generator=gen)[:n]
        rows.append(torch.stack([torch.full_like(flat, b), flat // side**2, flat // side % side, flat % side], 1))
    coords = torch.cat(rows).int()
    return coords, torch.randn(len(coords), channels, generator=gen, dtype=torch.float64)


def check_spconv(device: str = "cuda") -> str:
    """CUDA float32 vs CPU float64 for SubMConv3d (k3), SparseConv3d (k2 s2) and SparseInverseConv3d (k2)."""
    from ppkt.models.spconv_cpu import CPU_ONLY_BUILD, spconv

    if CPU_ONLY_BUILD and device == "cuda":
        raise RuntimeError("the installed spconv is a CPU-only build: install the spconv-cuXXX wheel matching torch's "
                           f"CUDA ({torch.version.cuda})")
    side, c_in, c_out = 32, 32, 64
    gen = torch.Generator().manual_seed(0)
    coords, feats = random_cloud(6000, side, c_in, gen)

    def layers(algo):
        torch.manual_seed(0)
        return (spconv.SubMConv3d(c_in, c_out, 3, padding=1, bias=False, indice_key="s", algo=algo),
                spconv.SparseConv3d(c_in, c_out, 2, stride=2, bias=False, indice_key="d", algo=algo),
                spconv.SparseInverseConv3d(c_out, c_in, 2, bias=False, indice_key="d", algo=algo))

    def run(mods, device, dtype):
        subm, down, up = (m.to(device, dtype) for m in mods)
        x = spconv.SparseConvTensor(feats.to(device, dtype), coords.to(device), [side] * 3, 2)
        mid = down(x)
        return {"SubMConv3d": subm(x).dense(), "SparseConv3d": mid.dense(), "SparseInverseConv3d": up(mid).dense()}

    cpu_layers, cuda_layers = layers(spconv.ConvAlgo.Native), layers(None if device == "cuda" else spconv.ConvAlgo.Native)  # the same seed: the same weights
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(cpu_layers, cuda_layers))
    ref = run(cpu_layers, "cpu", torch.float64)  # the patched CPU path
    got = run(cuda_layers, device, torch.float32)  # spconv's default CUDA algorithm
    errors = {k: ((got[k].double().cpu() - ref[k]).abs().max() / ref[k].abs().max()).item() for k in ref}
    bad = {k: e for k, e in errors.items() if not e < SPCONV_TOL}
    assert not bad, f"relative error above {SPCONV_TOL}: {bad}"
    return ", ".join(f"{k} {e:.1e}" for k, e in errors.items()) + " (max |CUDA - CPU f64| / max |CPU f64|)"


def check_pinned() -> str:
    """DataLoader(pin_memory=True) over PixelPointFrames: every tensor of the batch is page-locked."""
    from torch.utils.data import DataLoader

    from ppkt.config import load_config
    from ppkt.data.pairs import PixelPointFrames, collate_pairs

    cfg = load_config(ROOT / "configs" / "pretrain_demo.yaml", [f"data.roots=[{FRAMES}]"])
    data = PixelPointFrames(cfg.data, cfg.augment)
    loader = DataLoader(data, batch_sampler=[[(0, 1), (1, 2)]], collate_fn=collate_pairs, pin_memory=True)
    batch = next(iter(loader))
    tensors = {k: v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
    unpinned = [k for k, v in tensors.items() if not v.is_pinned()]
    assert not unpinned, f"not pinned: {unpinned}"
    return f"{', '.join(tensors)} pinned"


def pretrain_check(dtype: str, iterations: int, batch_size: int, out: Path, device: str = "cuda",
                   overrides: tuple = ()) -> Callable[[], str]:
    """The check of `iterations` pretraining iterations with train.amp_dtype=dtype (`overrides`: for a dry run)."""
    def check() -> str:
        from ppkt.checkpoint import PRETRAIN_FORMAT, load_checkpoint
        from ppkt.config import load_config
        from ppkt.models.teacher import torchvision_imagenet_path
        from ppkt.train.logging import read_metrics
        from ppkt.train.pretrain import pretrain

        if device == "cuda" and dtype == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            return "skipped: no native bfloat16 on this GPU"
        weights = "imagenet" if torchvision_imagenet_path("resnet50").is_file() else "none"
        cfg = load_config(ROOT / "configs" / "pretrain_scannet.yaml", [
            f"data.roots=[{FRAMES}]", "data.layout=7scenes", "data.frame=camera", f"teacher.weights={weights}",
            f"train.iterations={iterations}", f"train.batch_size={batch_size}", "train.amp=true",
            f"train.amp_dtype={dtype}", f"train.device={device}", f"train.workers={min(8, os.cpu_count() or 1)}",
            "train.log_every=1", f"train.checkpoint_every={iterations}", f"train.out_dir={out / dtype}", *overrides])
        cuda = device == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        pretrain(cfg)
        wall = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        records = read_metrics(out / dtype / "metrics.jsonl")
        losses = [r["loss"] for r in records]
        assert len(losses) == iterations, f"{len(losses)} logged iterations, expected {iterations}"
        first, last = statistics.median(losses[:5]), statistics.median(losses[-5:])
        assert last < first, f"loss did not fall: median {first:.3f} (first 5) -> {last:.3f} (last 5)"
        seconds = statistics.median(batch_size / r["frames_per_s"] for r in records[5:])
        scale = load_checkpoint(out / dtype / "checkpoints" / "last.pt", PRETRAIN_FORMAT)["scaler"].get("scale")
        return (f"loss {losses[0]:.2f} -> {last:.2f} (median of last 5), {seconds:.3f} s/it (median, data included), "
                f"peak {peak:.1f} GiB, loss scale {scale}, teacher {weights}, {wall:.0f} s")
    return check


def run_checks(checks: Dict[str, Callable[[], str]]) -> List[dict]:
    rows = []
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception as err:  # a failed check is a row of the table; the traceback goes to stderr
            traceback.print_exc()
            detail, ok = f"{type(err).__name__}: {err}", False
        rows.append({"check": name, "ok": ok, "detail": detail, "seconds": round(time.perf_counter() - start, 1)})
        print(f"[{'ok' if ok else 'FAILED'}] {name}: {detail}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: List[dict]) -> None:
    width = max(len(r["check"]) for r in rows)
    print(f"{'check'.ljust(width)}  result  seconds  detail")
    for r in rows:
        print(f"{r['check'].ljust(width)}  {'ok' if r['ok'] else 'FAILED':6}  {r['seconds']:7.1f}  {r['detail']}")


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50, help="pretraining iterations per dtype")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtypes", nargs="+", choices=("float16", "bfloat16"), default=["float16", "bfloat16"])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    report = {"torch": torch.__version__, "torch_cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        reason = (f"no usable CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}; "
                  f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
        print(f"gpu_check: {reason}: nothing was checked; run it on a machine with an NVIDIA GPU "
              f"(exit status {NO_CUDA})", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps({**report, "skipped": reason, "ok": None, "checks": []}, indent=2) + "\n")
        return NO_CUDA
    report["device"] = torch.cuda.get_device_name()
    print(f"gpu_check on {report['device']} (torch {torch.__version__}, CUDA {torch.version.cuda})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="ppkt_gpu_check_") as tmp:
        checks = {"back-projection on CUDA": check_backproject, "spconv CUDA vs CPU float64": check_spconv,
                  "pinned batches": check_pinned}
        for dtype in args.dtypes:
            checks[f"pretrain amp {dtype}"] = pretrain_check(dtype, args.iterations, args.batch_size, Path(tmp))
        rows = run_checks(checks)
    print_table(rows)
    report.update(ok=all(r["ok"] for r in rows), checks=rows)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
