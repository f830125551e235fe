"""Pinhole cameras, camera trajectories and a vectorised ray-cast renderer for synthetic scenes.

Camera convention (as in ScanNet and :mod:`ppkt.geometry.backproject`): x right, y down, z forward; poses are
(4, 4) camera-to-world in metres; pixel (u, v) has its centre at integer u, v. The ray of pixel (u, v) is
d = R [(u - cx) / fx, (v - cy) / fy, 1], so the ray parameter t of a hit is exactly the depth (camera z).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ppkt.synthetic.scene import BOX, CYLINDER, IGNORE_LABEL, Scene, surface_color

__all__ = ["RenderedFrame", "default_intrinsics", "look_at", "camera_trajectory", "pixel_rays", "cast_rays",
           "surface_normals", "render_frame", "add_depth_noise"]

NEAR = 0.01   # m: hits closer than this along the camera z axis are ignored


def default_intrinsics(height: int, width: int) -> np.ndarray:
    """(3, 3) K for an H x W image: fx = fy = 0.9 W (ScanNet-like, ~58 deg horizontal FOV), centred."""
    f = 0.9 * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(position, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """(4, 4) camera-to-world pose at ``position`` (3,) m looking along yaw (rad from +x, about z), pitch (rad,
    negative = down) and roll (rad about the view axis)."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    r = np.array([np.sin(yaw), -np.cos(yaw), 0.0])          # right = f x up, normalised
    d = np.cross(f, r)                                       # down
    c, s = np.cos(roll), np.sin(roll)
    r, d = c * r + s * d, -s * r + c * d
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = r, d, f, position
    return pose


def camera_trajectory(scene: Scene, n: int, rng: np.random.Generator, height=(1.2, 1.8), pitch_deg=(-30.0, -8.0),
                      wall_margin: float = 0.6, object_margin: float = 0.25) -> np.ndarray:
    """(n, 4, 4) camera-to-world poses of a hand-held scan: a loop around the room centre, looking across the room.

    Positions stay ``wall_margin`` m from the walls and outside every object footprint grown by ``object_margin``;
    heights are in ``height`` m, pitch in ``pitch_deg`` (negative = down), roll within +-3 deg.
    """
    Lx, Ly = scene.room[0], scene.room[1]
    lo = np.array([wall_margin, wall_margin])
    hi = np.array([Lx - wall_margin, Ly - wall_margin])
    centre = (lo + hi) / 2
    radii = (hi - lo) / 2 * rng.uniform(0.35, 1.0, 2)
    phi0, direction, cover = rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0]), rng.uniform(0.6, 1.0)
    yaw_amp, yaw_phase, yaw_cycles = np.radians(rng.uniform(20, 60)), rng.uniform(0, 2 * np.pi), rng.uniform(1, 3)
    h0, hz = rng.uniform(height[0] + 0.1, height[1] - 0.1), rng.uniform(0, 2 * np.pi)
    p_lo, p_hi = np.radians(pitch_deg)
    b = scene.boxes.astype(np.float64)
    c_h, s_h = np.cos(b[:, 6]), np.sin(b[:, 6])

    def free(xy: np.ndarray) -> bool:   # outside every object's grown footprint?
        rx, ry = xy[0] - b[:, 0], xy[1] - b[:, 1]
        inside = (np.abs(c_h * rx + s_h * ry) < b[:, 3] / 2 + object_margin) \
            & (np.abs(-s_h * rx + c_h * ry) < b[:, 4] / 2 + object_margin)
        return not inside.any()

    poses = np.zeros((n, 4, 4))
    last = None
    for i in range(n):
        s = i / max(n, 1)
        phi = phi0 + direction * 2 * np.pi * cover * s
        xy = np.clip(centre + radii * np.array([np.cos(phi), np.sin(phi)]) + rng.normal(0, 0.05, 2), lo, hi)
        for _ in range(200):
            if free(xy):
                break
            xy = rng.uniform(lo, hi)
        else:   # crowded room: stay where the previous frame was (or at the last candidate for the first frame)
            xy = last if last is not None else xy
        last = xy
        z = np.clip(h0 + 0.1 * np.sin(2 * np.pi * s + hz) + rng.normal(0, 0.02), *height)
        to_centre = np.arctan2(centre[1] - xy[1], centre[0] - xy[0])
        yaw = to_centre + yaw_amp * np.sin(2 * np.pi * yaw_cycles * s + yaw_phase) + rng.normal(0, 0.05)
        pitch = np.clip(p_lo + (p_hi - p_lo) * (0.5 + 0.5 * np.sin(2 * np.pi * s * 1.3 + hz)) + rng.normal(0, 0.03),
                        p_lo, p_hi)
        poses[i] = look_at((xy[0], xy[1], z), yaw, pitch, np.radians(rng.uniform(-3, 3)))
    return poses


@lru_cache(maxsize=8)
def _camera_rays(K_bytes: bytes, H: int, W: int) -> np.ndarray:
    K = np.frombuffer(K_bytes, np.float64).reshape(3, 3)
    v, u = np.divmod(np.arange(H * W), W)
    cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(H * W)], 1)
    cam.flags.writeable = False
    return cam


def pixel_rays(K: np.ndarray, hw: tuple[int, int], pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and world directions (H*W, 3) of all pixels (row-major), scaled so camera z = 1."""
    cam = _camera_rays(np.ascontiguousarray(K, np.float64).tobytes(), int(hw[0]), int(hw[1]))
    return pose[:3, 3].copy(), cam @ pose[:3, :3].T


# ---------------------------------------------------------------------------------------- ray casting
def _intersect(scene: Scene, origin: np.ndarray, dirs: np.ndarray, ray: np.ndarray, prim: np.ndarray,
               near: float) -> np.ndarray:
    """Entry distance t of each (ray, primitive) pair, inf for a miss. dirs: (R, 3); ray, prim: (M,) ints."""
    t = np.full(len(ray), np.inf)
    kind = scene.kind[prim]
    dcol = [np.ascontiguousarray(dirs[:, a]) for a in range(3)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = kind == BOX
        if m.any():   # slab test in the box frame: entry = max of the 3 slab entries, exit = min of the exits
            r, p = ray[m], prim[m]
            c, s = np.cos(scene.heading), np.sin(scene.heading)
            rel = origin - scene.center
            o = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], 1)  # (P, 3)
            lo, hi = -scene.size / 2 - o, scene.size / 2 - o                     # slab bounds minus origin
            dx, dy = np.take(dcol[0], r), np.take(dcol[1], r)
            cp, sp = np.take(c, p), np.take(s, p)
            dl = (cp * dx + sp * dy, -sp * dx + cp * dy, np.take(dcol[2], r))
            tn = tf = None
            for a in range(3):
                inv = 1.0 / dl[a]
                t1, t2 = np.take(lo[:, a], p) * inv, np.take(hi[:, a], p) * inv
                n_, f_ = np.fmin(t1, t2), np.fmax(t1, t2)
                tn, tf = (n_, f_) if tn is None else (np.fmax(tn, n_), np.fmin(tf, f_))
            t[m] = np.where((tn <= tf) & (tn > near), tn, np.inf)
        m = kind == CYLINDER
        if m.any():   # infinite vertical cylinder (quadratic) intersected with the z slab (caps)
            r, p = ray[m], prim[m]
            ox, oy = origin[0] - scene.center[p, 0], origin[1] - scene.center[p, 1]
            dx, dy, dz = np.take(dcol[0], r), np.take(dcol[1], r), np.take(dcol[2], r)
            rad = scene.size[p, 0] / 2
            a = dx * dx + dy * dy
            bh = ox * dx + oy * dy
            disc = bh * bh - a * (ox * ox + oy * oy - rad * rad)
            sq = np.sqrt(np.maximum(disc, 0.0))
            ts0, ts1 = (-bh - sq) / a, (-bh + sq) / a
            zc, hz = scene.center[p, 2], scene.size[p, 2] / 2
            t1, t2 = (zc - hz - origin[2]) / dz, (zc + hz - origin[2]) / dz
            tn, tf = np.fmax(ts0, np.fmin(t1, t2)), np.fmin(ts1, np.fmax(t1, t2))
            t[m] = np.where((disc >= 0) & (tn <= tf) & (tn > near), tn, np.inf)
    return t


def _closest(t: np.ndarray, ray: np.ndarray, prim: np.ndarray, n_rays: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ray the smallest t and its primitive (ties: lowest primitive id); inf / -1 where nothing is hit."""
    best = np.full(n_rays, np.inf)
    np.minimum.at(best, ray, t)
    win = np.isfinite(t) & (t == best[ray])
    big = np.iinfo(np.int64).max
    hit = np.full(n_rays, big, dtype=np.int64)
    np.minimum.at(hit, ray[win], prim[win])
    hit[hit == big] = -1
    return best, hit


def cast_rays(scene: Scene, origin, dirs: np.ndarray, near: float = NEAR) -> tuple[np.ndarray, np.ndarray]:
    """Closest hit of each ray against every primitive (no culling; for tests and few rays).

    origin: (3,) m; dirs: (R, 3) world directions (any length). Returns t (R,) in units of |dir| (inf = miss)
    and the primitive id (R,) int64 (-1 = miss).
    """
    dirs = np.asarray(dirs, np.float64)
    R, P = len(dirs), scene.num_primitives
    ray, prim = np.repeat(np.arange(R), P), np.tile(np.arange(P), R)
    t = _intersect(scene, np.asarray(origin, np.float64), dirs, ray, prim, near)
    return _closest(t, ray, prim, R)


_EDGES = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]])


def _screen_pairs(scene: Scene, K: np.ndarray, pose: np.ndarray, hw: tuple[int, int],
                  near: float) -> tuple[np.ndarray, np.ndarray]:
    """(pixel, primitive) candidate pairs: the pixels inside each primitive's projected bounding box.

    The box corners are clipped against the plane z = near before projection, so the pixel rectangle
    conservatively covers every hit with t > near.
    """
    H, W = hw
    cam = (scene.corners() - pose[:3, 3]) @ pose[:3, :3]                   # (P, 8, 3) camera frame
    z = cam[..., 2]
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]                     # (P, 12, 3)
    za, zb = a[..., 2], b[..., 2]
    crosses = (za - near) * (zb - near) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        clip = a + ((near - za) / (zb - za))[..., None] * (b - a)
    pts = np.concatenate([cam, clip], 1)                                     # (P, 20, 3)
    ok = np.concatenate([z >= near, crosses], 1)
    zs = np.where(ok, pts[..., 2], 1.0)
    u = np.where(ok, K[0, 0] * pts[..., 0] / zs + K[0, 2], np.nan)
    v = np.where(ok, K[1, 1] * pts[..., 1] / zs + K[1, 2], np.nan)
    visible = ok.any(1)
    with np.errstate(invalid="ignore"):
        u0 = np.clip(np.floor(np.nanmin(np.where(visible[:, None], u, 0), 1)), 0, W - 1)
        u1 = np.clip(np.ceil(np.nanmax(np.where(visible[:, None], u, -1), 1)), -1, W - 1)
        v0 = np.clip(np.floor(np.nanmin(np.where(visible[:, None], v, 0), 1)), 0, H - 1)
        v1 = np.clip(np.ceil(np.nanmax(np.where(visible[:, None], v, -1), 1)), -1, H - 1)
    w = np.where(visible, np.maximum(u1 - u0 + 1, 0), 0).astype(np.int64)
    h = np.where(visible, np.maximum(v1 - v0 + 1, 0), 0).astype(np.int64)
    count = w * h
    prim = np.repeat(np.arange(scene.num_primitives), count)
    start = np.repeat(np.cumsum(count) - count, count)
    local = np.arange(len(prim)) - start
    pw = w[prim]
    pix = (v0[prim].astype(np.int64) + local // pw) * W + u0[prim].astype(np.int64) + local % pw
    return pix, prim


def surface_normals(scene: Scene, prim: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (N, 3) at surface points (N, 3) of primitives ``prim`` (N,): the face whose plane
    the point is nearest relative to the half size (box faces; cylinder side or caps)."""
    rel = points - np.take(scene.center, prim, 0)
    half = np.take(scene.size, prim, 0) / 2
    c, s = np.take(np.cos(scene.heading), prim), np.take(np.sin(scene.heading), prim)
    lx, ly, lz = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]
    qx, qy, qz = np.abs(lx) / half[:, 0], np.abs(ly) / half[:, 1], np.abs(lz) / half[:, 2]
    ax = (qx >= qy) & (qx >= qz)
    ay = ~ax & (qy >= qz)
    nlx, nly = np.where(ax, np.sign(lx), 0.0), np.where(ay, np.sign(ly), 0.0)
    nx, ny, nz = c * nlx - s * nly, s * nlx + c * nly, np.where(ax | ay, 0.0, np.sign(lz))
    cyl = np.take(scene.kind, prim) == CYLINDER
    if cyl.any():
        rr = np.hypot(rel[:, 0], rel[:, 1])
        side = cyl & (rr / half[:, 0] >= qz)
        with np.errstate(divide="ignore", invalid="ignore"):
            nx = np.where(side, rel[:, 0] / rr, np.where(cyl, 0.0, nx))
            ny = np.where(side, rel[:, 1] / rr, np.where(cyl, 0.0, ny))
        nz = np.where(side, 0.0, np.where(cyl, np.sign(lz), nz))
    return np.stack([nx, ny, nz], 1)


# ------------------------------------------------------------------------------------------- render
@dataclass
class RenderedFrame:
    """One rendered RGB-D frame with ground truth.

    color: (H, W, 3) uint8. depth: (H, W) float32 m, camera z, 0 = no hit. semantic: (H, W) uint8 class id,
    255 = no hit. instance: (H, W) int32, object index + 1, 0 = none (no hit or floor/wall/ceiling).
    normal: (H, W, 3) float32 world unit normals (0 = no hit). intrinsics: (3, 3) K. pose: (4, 4) camera-to-world.
    """

    color: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    normal: np.ndarray
    intrinsics: np.ndarray
    pose: np.ndarray


def render_frame(scene: Scene, K: np.ndarray, pose: np.ndarray, hw: tuple[int, int],
                 near: float = NEAR) -> RenderedFrame:
    """Ray-cast one H x W frame (hw = (H, W)) of ``scene`` from camera-to-world ``pose`` (4, 4) with K (3, 3)."""
    H, W = hw
    K, pose = np.asarray(K, np.float64), np.asarray(pose, np.float64)
    origin, dirs = pixel_rays(K, hw, pose)
    pix, prim = _screen_pairs(scene, K, pose, hw, near)
    t = _intersect(scene, origin, dirs, pix, prim, near)
    depth, hit = _closest(t, pix, prim, H * W)
    idx = np.nonzero(hit >= 0)[0]
    p = hit[idx]
    points = origin + depth[idx, None] * dirs[idx]
    normals = surface_normals(scene, p, points)
    color = np.zeros((H * W, 3), np.uint8)
    color[idx] = surface_color(scene, p, points, normals)
    sem = np.full(H * W, IGNORE_LABEL, np.uint8)
    sem[idx] = scene.label[p]
    inst = np.zeros(H * W, np.int32)
    inst[idx] = scene.instance[p] + 1
    nrm = np.zeros((H * W, 3), np.float32)
    nrm[idx] = normals
    d = np.zeros(H * W, np.float32)
    d[idx] = depth[idx]
    return RenderedFrame(color.reshape(H, W, 3), d.reshape(H, W), sem.reshape(H, W), inst.reshape(H, W),
                         nrm.reshape(H, W, 3), K.copy(), pose.copy())


def add_depth_noise(depth: np.ndarray, rng: np.random.Generator, sigma: float = 0.0015, dropout: float = 0.003,
                    holes: int = 3, edge_dropout: float = 0.5, edge_jump: float = 0.08) -> np.ndarray:
    """Sensor-like depth (H, W) float32 m: Gaussian noise with std ``sigma`` * depth^2 (m), random single-pixel
    dropouts (probability ``dropout``), up to ``holes`` elliptic holes, and dropouts (probability ``edge_dropout``)
    next to depth jumps larger than ``edge_jump`` * depth. Invalid pixels are 0; the input is not modified."""
    H, W = depth.shape
    valid = depth > 0
    out = depth + (rng.standard_normal(depth.shape) * sigma * depth.astype(np.float64) ** 2).astype(np.float32)
    drop = rng.random(depth.shape) < dropout
    v, u = np.mgrid[0:H, 0:W]
    for _ in range(int(rng.integers(0, holes + 1))):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        ry, rx = rng.uniform(0.01, 0.06) * H, rng.uniform(0.01, 0.06) * W
        drop |= ((v - cy) / ry) ** 2 + ((u - cx) / rx) ** 2 < 1
    jump = np.zeros(depth.shape, bool)
    dv = np.abs(np.diff(depth, axis=0)) > edge_jump * np.maximum(depth[1:], depth[:-1])
    du = np.abs(np.diff(depth, axis=1)) > edge_jump * np.maximum(depth[:, 1:], depth[:, :-1])
    jump[1:] |= dv
    jump[:-1] |= dv
    jump[:, 1:] |= du
    jump[:, :-1] |= du
    drop |= jump & (rng.random(depth.shape) < edge_dropout)
    out[drop | ~valid | (out <= 0)] = 0.0
    return out.astype(np.float32)
