"""Time SR-UNet forward+backward on CPU with ppkt's two CPU paths of spconv side by side.

The paths (ppkt.models.spconv_cpu): "loop" -- spconv's own per-kernel-offset gather-GEMM-scatter loop with
ppkt's scatter fix; "gemm" -- ppkt.models.spconv_gemm. Both run in one process on the same clouds and the same
weights, interleaved (loop, gemm, loop, gemm, ...) after one warm-up iteration each, so drifting load hits both
alike; the table gives medians, "speedup" = median(baseline) / median(path) and "paired" = the median of the
per-iteration ratios baseline_i / path_i (the two run back to back: robust to load that changes between
iterations). Cases:

* synthetic: depth-frame-like clouds -- one synthetic 480x640 depth frame of a room (floor, two walls, a table
  and boxes) per cloud, back-projected with Kinect-like intrinsics, voxelised at 2.5 cm and cropped to the
  ``--voxels`` voxels nearest the image centre;
* real: frames 000000 and 000050 of data/7scenes-redkitchen back-projected with their poses (world frame,
  ppkt.geometry.backproject) and voxelised at 2.5 cm (ppkt.geometry.voxelize), one cloud each, mean colour
  per voxel.

Efficiency = useful multiply-adds per second / a dense fp32 matmul's (``torch.mm`` of two ``--mm-size`` square
matrices, same thread count, median of 5 runs before and 5 after the timed iterations). Useful multiply-adds = sum over the convolutions of
pairs x C_in x C_out from the rulebooks (a submanifold conv's centre counts one pair per voxel, a 1x1 conv
one per voxel), times 3 for forward + backward. Peak memory: the process's peak RSS (VmHWM) during that
path's iterations, reset before each.

    python benchmarks/bench_sparse_unet.py                          # SR-UNet34, both cases, 1 and 2 threads
    python benchmarks/bench_sparse_unet.py --cases synthetic --threads 2 --runs 7 --json /tmp/sr34.json
"""

from __future__ import annotations

import ppkt  # noqa: F401  (first: OMP_WAIT_POLICY as the ppkt command sets it, before torch loads OpenMP)

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ppkt.models import spconv_gemm
from ppkt.models.sparse_unet import DEFAULT_CHANNELS, build_sparse_unet
from ppkt.models.spconv_cpu import cpu_conv_path, spconv

H, W, FX, FY = 480, 640, 525.0, 525.0
REPO = Path(__file__).resolve().parents[1]
REAL_FRAMES = ("000000", "000050")


def room_depth(rng: np.random.Generator) -> np.ndarray:
    """(H, W) depth in metres: ray-cast a room with a floor, two walls, a table top and boxes."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - W / 2) / FX, (v - H / 2) / FY, np.ones_like(u)], -1)  # camera: x right, y down, z fwd
    tilt = np.deg2rad(rng.uniform(15, 30))  # camera looks slightly down
    rot = np.array([[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)], [0, -np.sin(tilt), np.cos(tilt)]])
    d = rays @ rot.T  # world: y down, camera 1.4 m above the floor
    cam_h, far = 1.4, np.full((H, W), np.inf)  # nearest hit along each ray

    def plane(axis, value, bounds=None):
        """Intersect with the plane world[axis] = value (camera at the origin), within bounds."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = value / d[..., axis]
            p = d * t[..., None]
        ok = t > 0
        for ax, (a, b) in (bounds or {}).items():
            ok &= (p[..., ax] >= a) & (p[..., ax] <= b)
        np.minimum(far, np.where(ok, t, np.inf), out=far)

    plane(1, cam_h)  # floor
    plane(2, rng.uniform(3.0, 4.0))  # back wall
    plane(0, rng.uniform(-2.2, -1.6))  # left wall
    plane(1, cam_h - 0.75, {0: (-0.6, 0.6), 2: (1.6, 2.4)})  # table top
    for _ in range(3):  # box tops
        x, z, s = rng.uniform(-1.2, 1.2), rng.uniform(1.5, 3.0), rng.uniform(0.2, 0.4)
        plane(1, cam_h - rng.uniform(0.2, 0.5), {0: (x - s, x + s), 2: (z - s, z + s)})
    far[~np.isfinite(far)] = 0.0
    depth = far  # rays have z = 1 in the camera frame, so the ray parameter is the depth
    return depth + rng.normal(0, 0.003, depth.shape) * (depth > 0)


def frame_voxels(n_voxels: int, rng: np.random.Generator, voxel: float = 0.025) -> np.ndarray:
    """(n_voxels, 3) unique non-negative int voxel indices of one back-projected depth frame."""
    depth = room_depth(rng)
    v, u = np.nonzero((depth > 0.3) & (depth < 6.0))
    z = depth[v, u]
    pts = np.stack([(u - W / 2) / FX * z, (v - H / 2) / FY * z, z], 1)
    vox, first = np.unique(np.floor(pts / voxel).astype(np.int64), axis=0, return_index=True)
    if len(vox) < n_voxels:
        raise SystemExit(f"frame has only {len(vox)} voxels at {voxel} m; ask for fewer")
    radius = np.hypot(u[first] - W / 2, v[first] - H / 2)  # keep a contiguous patch around the centre
    vox = vox[np.argsort(radius, kind="stable")[:n_voxels]]
    return vox - vox.min(0)


def synthetic_batch(n_voxels: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(feats (N, 3), coords (N, 4) int32 [b, x, y, z], description) of ``batch`` synthetic frames."""
    rng = np.random.default_rng(0)
    clouds = [frame_voxels(n_voxels, rng) for _ in range(batch)]
    coords = torch.from_numpy(np.concatenate([np.c_[np.full(len(c), b), c] for b, c in enumerate(clouds)])).int()
    feats = torch.from_numpy(rng.random((len(coords), 3), dtype=np.float32))
    return feats, coords, f"{batch} synthetic frames x {n_voxels} voxels"


def real_batch(voxel: float = 0.025) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Frames 000000 and 000050 of data/7scenes-redkitchen, one cloud each (world frame), mean colour - 0.5."""
    from ppkt.data.frames import read_color, read_depth, read_matrix
    from ppkt.geometry.backproject import backproject
    from ppkt.geometry.voxelize import voxelize

    root = REPO / "data" / "7scenes-redkitchen"
    K = torch.from_numpy(np.loadtxt(root / "camera-intrinsics.txt"))
    feats, coords = [], []
    for b, name in enumerate(REAL_FRAMES):
        depth = torch.from_numpy(read_depth(root / f"frame-{name}.depth.png"))
        color = torch.from_numpy(read_color(root / f"frame-{name}.color.jpg")).float() / 255
        pose = torch.from_numpy(read_matrix(root / f"frame-{name}.pose.txt", "pose"))
        bp = backproject(depth, K, color, pose)
        vox = voxelize(bp.points, voxel)
        feats.append(vox.mean(bp.features) - 0.5)
        coords.append(torch.cat([torch.full((vox.num_voxels, 1), b, dtype=torch.int32), vox.coords], 1))
    sizes = "+".join(str(len(c)) for c in coords)
    return torch.cat(feats), torch.cat(coords), f"7scenes-redkitchen frames {'+'.join(REAL_FRAMES)} ({sizes} voxels)"


def useful_macs(model: torch.nn.Module, feats: torch.Tensor, coords: torch.Tensor, batch: int) -> int:
    """Forward multiply-adds of the model's convolutions: sum of pairs x C_in x C_out (one forward, no grad)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        n_in = inputs[0].features.shape[0]
        c_in, c_out = module.in_channels, module.out_channels
        if getattr(module, "conv1x1", False):
            total += n_in * c_in * c_out
            return
        data = output.indice_dict[module.indice_key]  # SR-UNet's k > 1 convs all have an indice_key
        rb = spconv_gemm.Rulebook(data.indice_pairs, data.indice_pair_num, data.is_subm)
        total += (rb.num_pairs + (n_in if module.subm else 0)) * c_in * c_out

    convs = (spconv.SubMConv3d, spconv.SparseConv3d, spconv.SparseInverseConv3d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convs)]
    try:
        with torch.no_grad():
            model(feats, coords, batch)
    finally:
        for h in handles:
            h.remove()
    return total


def mm_times(size: int, repeats: int = 5) -> list[float]:
    """Seconds of dense fp32 ``torch.mm`` of two (size, size) matrices, repeats times after a warm-up."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return times


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _peak_rss_gib() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(m.group(1)) / 1024**2 if m else None


def time_paths(model, feats, coords, batch: int, paths: list[str], runs: int) -> dict:
    """{path: {"fwd": [s], "bwd": [s], "peak_rss_gib": float}}, paths interleaved, one warm-up each."""
    res = {p: {"fwd": [], "bwd": [], "peak_rss_gib": 0.0} for p in paths}
    for it in range(runs + 1):
        for path in paths:
            with cpu_conv_path(path):
                model.zero_grad(set_to_none=True)
                reset = _reset_peak_rss()
                t0 = time.perf_counter()
                out = model(feats, coords, batch)
                t1 = time.perf_counter()
                (out * 1e-3).square().sum().backward()
                t2 = time.perf_counter()
                del out
                peak = _peak_rss_gib() if reset else None
            if peak is not None:
                res[path]["peak_rss_gib"] = max(res[path]["peak_rss_gib"], peak)
            if it > 0:  # the first iteration of each path is warm-up
                res[path]["fwd"].append(t1 - t0)
                res[path]["bwd"].append(t2 - t1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="SR-UNet34", choices=["SR-UNet14", "SR-UNet18", "SR-UNet34"])
    ap.add_argument("--channels", type=int, nargs=8, default=list(DEFAULT_CHANNELS))
    ap.add_argument("--cases", default="synthetic,real", help="comma-separated: synthetic, real")
    ap.add_argument("--voxels", type=int, default=20000, help="voxels per synthetic cloud")
    ap.add_argument("--batch", type=int, default=2, help="synthetic clouds per batch")
    ap.add_argument("--runs", "--repeats", type=int, default=5, help="timed iterations per path (after one warm-up)")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--paths", default="loop,gemm", help="comma-separated CPU conv paths (first = baseline)")
    ap.add_argument("--mm-size", type=int, default=2048, help="side of the dense fp32 matmul reference")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers (and the table) to this JSON file")
    args = ap.parse_args()
    table = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        table.append(line)

    paths = args.paths.split(",")
    threads = [int(t) for t in args.threads.split(",")]

    model = build_sparse_unet(args.arch, 3, args.channels).train()
    n_params = sum(p.numel() for p in model.parameters())
    report = {
        "arch": args.arch, "channels": list(args.channels), "params": n_params, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "runs": args.runs,
        "load_avg_start": os.getloadavg()[0], "cases": [],
    }
    say(f"{args.arch} channels={tuple(args.channels)} params={n_params / 1e6:.1f}M  torch {torch.__version__}, "
          f"{report['cpu']} x{os.cpu_count()}, OMP_WAIT_POLICY={report['omp_wait_policy']}, "
          f"load avg {report['load_avg_start']:.1f}; medians of {args.runs} runs after 1 warm-up, paths interleaved")
    for case in args.cases.split(","):
        feats, coords, desc = synthetic_batch(args.voxels, args.batch) if case == "synthetic" else real_batch()
        batch = int(coords[:, 0].max()) + 1
        macs = useful_macs(model, feats, coords, batch)
        say()
        say(f"[{case}] {desc}: {len(coords)} voxels; useful multiply-adds fwd {macs / 1e9:.2f} G, "
              f"fwd+bwd {3 * macs / 1e9:.2f} G")
        say(f"{'thr':>3} {'path':>5} {'fwd s':>7} {'bwd s':>7} {'total s':>8} {'min':>7} {'max':>7} "
              f"{'speedup':>7} {'paired':>6} {'GMAC/s':>7} {'mm GF/s':>7} {'eff':>5} {'peak GiB':>8} {'load':>5}")
        for t in threads:
            torch.set_num_threads(t)
            before = mm_times(args.mm_size)
            res = time_paths(model, feats, coords, batch, paths, args.runs)
            rate = 2 * args.mm_size**3 / statistics.median(before + mm_times(args.mm_size))  # before and after
            load = os.getloadavg()[0]
            base_all = [a + b for a, b in zip(res[paths[0]]["fwd"], res[paths[0]]["bwd"])]
            base = statistics.median(base_all)
            for path in paths:
                r = res[path]
                total = [a + b for a, b in zip(r["fwd"], r["bwd"])]
                med = statistics.median(total)
                macs_s = 3 * macs / med
                row = {
                    "case": case, "description": desc, "voxels": len(coords), "threads": t, "path": path,
                    "fwd_s": statistics.median(r["fwd"]), "bwd_s": statistics.median(r["bwd"]), "total_s": med,
                    "total_min_s": min(total), "total_max_s": max(total), "total_all_s": total,
                    "speedup_vs_" + paths[0]: base / med,
                    "paired_speedup_vs_" + paths[0]: statistics.median(b / t for b, t in zip(base_all, total)),
                    "useful_macs_fwd": macs,
                    "useful_mac_per_s": macs_s, "mm_flop_per_s": rate,
                    "efficiency": 2 * macs_s / rate, "peak_rss_gib": r["peak_rss_gib"] or None, "load_avg": load,
                }
                report["cases"].append(row)
                peak = f"{r['peak_rss_gib']:.2f}" if r["peak_rss_gib"] else "n/a"
                say(f"{t:>3} {path:>5} {row['fwd_s']:7.3f} {row['bwd_s']:7.3f} {med:8.3f} {min(total):7.3f} "
                      f"{max(total):7.3f} {base / med:6.2f}x {row['paired_speedup_vs_' + paths[0]]:5.2f}x "
                      f"{macs_s / 1e9:7.1f} {rate / 1e9:7.1f} "
                      f"{row['efficiency']:5.2f} {peak:>8} {load:5.1f}")
    report["table"] = "\n".join(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
