"""Time SR-UNet forward+backward on CPU with depth-frame-like voxel clouds.

Each cloud is one synthetic 480x640 depth frame of a room (floor, two walls, a table and boxes),
back-projected with Kinect-like intrinsics, voxelised at 2.5 cm and cropped to the N voxels nearest
the image centre. Prints the voxel count, median seconds per iteration (forward, backward, total)
and the peak RSS of the process.

    python benchmarks/bench_sparse_unet.py                      # SR-UNet34, 2 x 20k voxels
    python benchmarks/bench_sparse_unet.py --voxels 50000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import numpy as np
import torch

from ppkt.models.sparse_unet import DEFAULT_CHANNELS, build_sparse_unet

H, W, FX, FY = 480, 640, 525.0, 525.0


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="SR-UNet34", choices=["SR-UNet14", "SR-UNet18", "SR-UNet34"])
    ap.add_argument("--channels", type=int, nargs=8, default=list(DEFAULT_CHANNELS))
    ap.add_argument("--voxels", type=int, default=20000, help="voxels per cloud")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="timed iterations (after one warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    clouds = [frame_voxels(args.voxels, rng) for _ in range(args.batch)]
    coords = torch.from_numpy(np.concatenate([np.c_[np.full(len(c), b), c] for b, c in enumerate(clouds)])).int()
    feats = torch.rand(len(coords), 3)
    model = build_sparse_unet(args.arch, 3, args.channels).train()
    n_params = sum(p.numel() for p in model.parameters())

    fwd, bwd = [], []
    for it in range(args.runs + 1):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        out = model(feats, coords, args.batch)
        t1 = time.perf_counter()
        (out * 1e-3).square().sum().backward()
        t2 = time.perf_counter()
        if it > 0:  # the first iteration is warm-up
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    total = [a + b for a, b in zip(fwd, bwd)]
    extent = (coords[:, 1:].max(0).values + 1).tolist()
    print(f"{args.arch} channels={tuple(args.channels)} params={n_params / 1e6:.1f}M  torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"batch {args.batch} x {args.voxels} voxels = {len(coords)} voxels (2.5 cm, grid extent {extent})")
    print(f"forward  median {statistics.median(fwd):.3f} s")
    print(f"backward median {statistics.median(bwd):.3f} s")
    print(f"fwd+bwd  median {statistics.median(total):.3f} s/iter  (min {min(total):.3f}, max {max(total):.3f}, "
          f"{args.runs} runs)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB")


if __name__ == "__main__":
    main()
