"""Synthetic indoor rooms: class table, materials (procedural solid textures), primitives, room generator.

World frame: z up, metres; a room's interior is the box [0, Lx] x [0, Ly] x [0, Lz]. A scene is a flat list
of P primitives: boxes (axis-aligned in their local frame, rotated by a heading about z) and vertical
cylinders. Every primitive carries a class id, an object index (-1 for floor / wall / ceiling) and a material.
Objects (tables, chairs, ...) are groups of primitives sharing one object index and one heading.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field, replace

import numpy as np

from ppkt.data.class_lists import SYNTHETIC_CLASSES, SYNTHETIC_STRUCTURE

__all__ = ["CLASS_NAMES", "CLASS_COLORS", "NUM_CLASSES", "IGNORE_LABEL", "IGNORE_INDEX", "STRUCTURE_CLASSES",
           "LIGHT_DIR", "class_table", "Material", "Scene", "SceneBuilder", "generate_scene", "albedo",
           "shading", "surface_color", "rotz"]

# ------------------------------------------------------------------------------------------- classes
CLASS_NAMES = SYNTHETIC_CLASSES
NUM_CLASSES = len(CLASS_NAMES)
CLASS_COLORS = np.array([[152, 223, 138], [174, 199, 232], [220, 220, 200], [255, 152, 150], [188, 189, 34],
                         [255, 187, 120], [140, 86, 75], [31, 119, 180], [148, 103, 189], [227, 119, 194],
                         [214, 39, 40], [23, 190, 207]], dtype=np.uint8)  # (C, 3) display colours
IGNORE_LABEL = 255   # 2D label images: pixel without a hit
IGNORE_INDEX = -1    # 3D segment / instance arrays: no class / no object
STRUCTURE_CLASSES = SYNTHETIC_STRUCTURE  # floor, wall, ceiling: no object index, no 3D box
_CID = {n: i for i, n in enumerate(CLASS_NAMES)}


def class_table() -> dict:
    """The class table as JSON-ready dict: names, ids 0..C-1, RGB display colours, ignore values."""
    return {"names": list(CLASS_NAMES), "ids": list(range(NUM_CLASSES)), "colors": CLASS_COLORS.tolist(),
            "ignore_index": IGNORE_INDEX, "ignore_label": IGNORE_LABEL,
            "structure_classes": list(STRUCTURE_CLASSES)}


def rotz(heading: float | np.ndarray) -> np.ndarray:
    """(3, 3) rotation about z by ``heading`` radians (or (..., 3, 3) for an array of headings)."""
    c, s = np.cos(heading), np.sin(heading)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


# ----------------------------------------------------------------------------------------- materials
PLAIN, STRIPES, CHECKER, WOOD, NOISE = range(5)  # surface patterns


@dataclass(frozen=True)
class Material:
    """A procedural solid texture, evaluated at 3D points in the owning object's frame.

    The albedo is lerp(color_a, color_b, t) * (1 + noise * (2 n - 1)), where n is value noise at
    ``noise_freq`` cycles/m and t depends on ``pattern``: plain 0; stripes 1 where frac(p[axis] freq) < duty;
    checker parity of the cells (1/freq m) in the two axes other than ``axis``; wood rings about ``axis``
    (freq rings/m, warped by 0.7 n); noise t = n. Colours are RGB in [0, 1]. ``offset`` (m) shifts the
    texture per instance, ``seed`` selects the noise lattice.
    """

    pattern: int
    color_a: tuple
    color_b: tuple
    freq: float = 1.0
    axis: int = 0
    duty: float = 0.5
    noise: float = 0.1
    noise_freq: float = 10.0
    offset: tuple = (0.0, 0.0, 0.0)
    seed: int = 0


def _hsv(h: float, s: float, v: float) -> tuple:
    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def _darker(c: tuple, f: float) -> tuple:
    return tuple(float(x) * f for x in c)


def sample_material(kind: str, rng: np.random.Generator, axis: int = 0) -> Material:
    """Random material of a named kind (floor, wall, ceiling, wood, metal, fabric, sheet, upholstery,
    paint, cardboard, screen, shade); colour ranges are per kind so classes are recognisable from appearance."""
    u = rng.uniform
    extra = dict(offset=tuple(u(0, 50, 3)), seed=int(rng.integers(0, 2**31)))
    if kind == "floor":
        style = rng.integers(0, 3)
        if style == 0:   # wooden planks, grain along x
            a = _hsv(u(0.05, 0.1), u(0.45, 0.7), u(0.45, 0.75))
            return Material(WOOD, a, _darker(a, u(0.55, 0.75)), u(6, 14), 0, noise=0.08, noise_freq=u(3, 6), **extra)
        if style == 1:   # tiles
            a = _hsv(u(0, 1), u(0, 0.15), u(0.6, 0.85))
            return Material(CHECKER, a, _darker(a, u(0.7, 0.85)), 1 / u(0.3, 0.6), 2, noise=0.05,
                            noise_freq=20, **extra)
        a = _hsv(u(0, 1), u(0.1, 0.4), u(0.3, 0.55))   # carpet
        return Material(NOISE, a, _darker(a, 0.75), noise=0.25, noise_freq=u(30, 60), **extra)
    if kind == "wall":
        a = _hsv(u(0, 1), u(0.03, 0.2), u(0.78, 0.95))
        if rng.random() < 0.4:   # striped wallpaper, vertical stripes along the wall
            return Material(STRIPES, a, _hsv(u(0, 1), u(0.1, 0.3), u(0.65, 0.85)), u(3, 8), axis,
                            u(0.3, 0.5), noise=0.03, noise_freq=15, **extra)
        return Material(PLAIN, a, a, noise=0.06, noise_freq=u(2, 5), **extra)
    if kind == "ceiling":
        a = _hsv(u(0.1, 0.15), u(0, 0.05), u(0.9, 1.0))
        return Material(PLAIN, a, a, noise=0.04, noise_freq=3, **extra)
    if kind == "wood":   # grain rings about ``axis``
        a = _hsv(u(0.05, 0.1), u(0.4, 0.75), u(0.35, 0.8))
        return Material(WOOD, a, _darker(a, u(0.5, 0.7)), u(10, 25), axis, noise=0.06, noise_freq=u(4, 8), **extra)
    if kind == "metal":
        if rng.random() < 0.7:
            a = _hsv(u(0, 1), u(0, 0.08), u(0.12, 0.3))
        else:
            a = _hsv(u(0.1, 0.14), u(0.4, 0.6), u(0.6, 0.8))   # brass
        return Material(PLAIN, a, a, noise=0.05, noise_freq=20, **extra)
    if kind == "fabric":   # chairs: saturated, fine weave noise
        a = _hsv(u(0, 1), u(0.5, 0.9), u(0.4, 0.85))
        return Material(PLAIN, a, a, noise=0.2, noise_freq=u(60, 90), **extra)
    if kind == "sheet":    # beds: light, striped bed linen
        a = _hsv(u(0, 1), u(0, 0.2), u(0.85, 0.98))
        return Material(STRIPES, a, _hsv(u(0, 1), u(0.25, 0.5), u(0.7, 0.9)), u(4, 10), axis, u(0.2, 0.5),
                        noise=0.04, noise_freq=30, **extra)
    if kind == "upholstery":   # sofas: mid-dark, blotchy
        a = _hsv(u(0, 1), u(0.25, 0.7), u(0.25, 0.55))
        return Material(NOISE, a, _darker(a, 0.6), noise=0.12, noise_freq=u(6, 12), **extra)
    if kind == "paint":    # cabinets: light paint, thin dark door gaps
        a = _hsv(u(0, 1), u(0, 0.25), u(0.6, 0.92))
        return Material(STRIPES, a, _darker(a, 0.35), 1 / u(0.3, 0.5), axis, u(0.03, 0.06), noise=0.03,
                        noise_freq=10, **extra)
    if kind == "cardboard":
        a = _hsv(u(0.07, 0.11), u(0.45, 0.65), u(0.55, 0.75))
        return Material(NOISE, a, _darker(a, 0.7), noise=0.1, noise_freq=u(8, 16), **extra)
    if kind == "screen":   # monitors: near black with faint scanlines
        a = _hsv(u(0.55, 0.65), u(0.1, 0.4), u(0.05, 0.12))
        return Material(STRIPES, a, _hsv(0.6, 0.5, 0.22), u(40, 70), axis, 0.5, noise=0.05, noise_freq=30, **extra)
    if kind == "shade":    # lamp shades: bright warm
        a = _hsv(u(0.1, 0.16), u(0.1, 0.5), u(0.88, 1.0))
        return Material(PLAIN, a, a, noise=0.1, noise_freq=u(40, 60), **extra)
    raise ValueError(f"unknown material kind {kind!r}")


# ------------------------------------------------------------------------------------------- texture
def _avalanche(h: np.ndarray) -> np.ndarray:
    """uint32 -> pseudo-random float32 in [0, 1) (integer finaliser hash)."""
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 2**24)


def value_noise(p: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Trilinear value noise with smoothstep weights. p: (N, 3) lattice units; seed: (N,) uint32 -> (N,) [0, 1)."""
    f = np.floor(p)
    w = (p - f).astype(np.float32)
    w = w * w * (np.float32(3.0) - np.float32(2.0) * w)
    i = f.astype(np.int64).astype(np.uint32)
    primes = (np.uint32(0x8DA6B343), np.uint32(0xD8163841), np.uint32(0xCB1AB31F))
    hx = [i[:, 0] * primes[0], (i[:, 0] + np.uint32(1)) * primes[0]]
    hy = [i[:, 1] * primes[1], (i[:, 1] + np.uint32(1)) * primes[1]]
    hz = [(i[:, 2] * primes[2]) ^ seed, ((i[:, 2] + np.uint32(1)) * primes[2]) ^ seed]
    wx, wy, wz = w[:, 0], w[:, 1], w[:, 2]
    out = None
    for z in (0, 1):
        rows = []
        for y in (0, 1):
            hyz = hy[y] ^ hz[z]
            a, b = _avalanche(hx[0] ^ hyz), _avalanche(hx[1] ^ hyz)
            rows.append(a + (b - a) * wx)
        layer = rows[0] + (rows[1] - rows[0]) * wy
        out = layer if out is None else out + (layer - out) * wz
    return out


def albedo(scene: "Scene", prim: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unshaded surface colour. prim: (N,) primitive ids; points: (N, 3) world metres -> (N, 3) float32 in [0, 1]."""
    take = lambda arr: np.take(arr, prim, axis=0)  # noqa: E731
    rel = points - take(scene.tex_origin)                                  # world -> object (texture) frame
    c, s = take(np.cos(scene.tex_heading)), take(np.sin(scene.tex_heading))
    off = take(scene.mat_offset)
    f32 = np.float32
    px = (c * rel[:, 0] + s * rel[:, 1] + off[:, 0]).astype(f32)   # float32 from here: texture space only
    py = (-s * rel[:, 0] + c * rel[:, 1] + off[:, 1]).astype(f32)
    pz = (rel[:, 2] + off[:, 2]).astype(f32)
    seed = take(scene.mat_seed).astype(np.uint32)
    nf = take(scene.mat_noise_freq).astype(f32)[:, None]
    p = np.stack([px, py, pz], 1)
    n = f32(0.65) * value_noise(p * nf, seed) \
        + f32(0.35) * value_noise(p * (f32(2.7) * nf), seed ^ np.uint32(0x9E3779B9))   # 2 octaves
    pattern, axis = take(scene.mat_pattern), take(scene.mat_axis)
    freq = take(scene.mat_freq).astype(f32)
    along = np.where(axis == 0, px, np.where(axis == 1, py, pz))           # stripe / grain axis
    o1, o2 = np.where(axis == 0, py, px), np.where(axis == 2, py, pz)      # the two other axes
    x = along * freq
    stripes = ((x - np.floor(x)) < take(scene.mat_duty)).astype(f32)
    checker = (np.floor(o1 * freq) + np.floor(o2 * freq)) % f32(2.0)
    x = np.sqrt(o1 * o1 + o2 * o2) * freq + f32(0.7) * n
    wood = (x - np.floor(x)) ** 3
    noise = np.clip(f32(1.6) * (n - f32(0.5)) + f32(0.5), f32(0.0), f32(1.0))
    t = np.select([pattern == STRIPES, pattern == CHECKER, pattern == WOOD, pattern == NOISE],
                  [stripes, checker, wood, noise], f32(0.0))
    a, b = take(scene.mat_a).astype(f32), take(scene.mat_b).astype(f32)
    col = a + (b - a) * t[:, None]
    col *= (f32(1.0) + take(scene.mat_noise).astype(f32) * (f32(2.0) * n - f32(1.0)))[:, None]
    return np.clip(col, f32(0.0), f32(1.0))


LIGHT_DIR = np.array([0.35, 0.55, 1.0]) / np.linalg.norm([0.35, 0.55, 1.0])  # unit, world, towards the light
AMBIENT = 0.3


def shading(normals: np.ndarray) -> np.ndarray:
    """View-independent shading factor: ambient + (1 - ambient) * half-Lambert. normals: (N, 3) unit -> (N,)."""
    return (AMBIENT + (1.0 - AMBIENT) * (0.5 + 0.5 * (normals @ LIGHT_DIR))).astype(np.float32)


def surface_color(scene: "Scene", prim: np.ndarray, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Shaded colour (N, 3) uint8 at world points (N, 3) with unit normals (N, 3) on primitives ``prim`` (N,).

    Used by both the renderer and the point sampler, so pixel and point colours agree (shading has no view term).
    """
    col = albedo(scene, prim, points) * shading(normals)[:, None]
    return np.clip(np.rint(col * 255.0), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- scene
BOX, CYLINDER = 0, 1
FACES = ("-x", "+x", "-y", "+y", "-z", "+z")   # sampling mask order; cylinders: -z/+z caps, the side always


@dataclass
class Scene:
    """A labelled room made of P primitives and K objects (all arrays indexed by primitive unless noted).

    room: (3,) interior extents Lx, Ly, Lz (m). kind: (P,) 0 box / 1 cylinder. center: (P, 3) m (cylinder:
    axis mid-point). size: (P, 3) local-frame extents dx, dy, dz (cylinder: 2r, 2r, height). heading: (P,) rad
    about z. label: (P,) class id. instance: (P,) object index 0..K-1, -1 for structure. faces: (P, 6) bool,
    faces worth sampling (hidden ones False). tex_origin / tex_heading: texture frame of the owning object.
    mat_*: material parameters (see :class:`Material`). boxes: (K, 8) [cx, cy, cz, dx, dy, dz, heading, class]
    oriented bounding box of each object (dx along the heading direction).
    """

    room: np.ndarray
    has_ceiling: bool
    kind: np.ndarray
    center: np.ndarray
    size: np.ndarray
    heading: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    faces: np.ndarray
    tex_origin: np.ndarray
    tex_heading: np.ndarray
    mat_pattern: np.ndarray
    mat_a: np.ndarray
    mat_b: np.ndarray
    mat_freq: np.ndarray
    mat_axis: np.ndarray
    mat_duty: np.ndarray
    mat_noise: np.ndarray
    mat_noise_freq: np.ndarray
    mat_offset: np.ndarray
    mat_seed: np.ndarray
    boxes: np.ndarray

    @property
    def num_primitives(self) -> int:
        return len(self.kind)

    @property
    def num_objects(self) -> int:
        return len(self.boxes)

    def corners(self) -> np.ndarray:
        """(P, 8, 3) world corners of each primitive's bounding box (cylinders: their enclosing box)."""
        sign = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        local = sign[None] * (self.size[:, None] / 2)                       # (P, 8, 3)
        return np.einsum("pij,pkj->pki", rotz(self.heading), local) + self.center[:, None]


@dataclass
class SceneBuilder:
    """Collects primitives and objects, then :meth:`build` freezes them into a :class:`Scene`.

    Object parts are given in the object's frame (origin on its base, rotated by its heading); a bottom face
    resting on the floor (z = 0) is marked hidden automatically.
    """

    room: tuple
    has_ceiling: bool = True
    _prims: list = field(default_factory=list)
    _objects: list = field(default_factory=list)   # (class id, origin (3,), heading)

    def add_object(self, label: int | str, origin, heading: float) -> int:
        """Start an object of class ``label`` at ``origin`` (x, y, z of its base) -> its object index."""
        cid = _CID[label] if isinstance(label, str) else int(label)
        self._objects.append((cid, np.asarray(origin, dtype=np.float64), float(heading)))
        return len(self._objects) - 1

    def _add(self, kind, center, size, heading, label, instance, material, hide, tex_origin, tex_heading):
        faces = np.ones(6, bool)
        for f in hide:
            faces[FACES.index(f)] = False
        center, size = np.asarray(center, np.float64), np.asarray(size, np.float64)
        if abs(center[2] - size[2] / 2) < 1e-9:
            faces[4] = False   # bottom on the floor
        self._prims.append(dict(kind=kind, center=center, size=size, heading=float(heading), label=label,
                                instance=instance, faces=faces, material=material,
                                tex_origin=np.asarray(tex_origin, np.float64), tex_heading=float(tex_heading)))

    def add_box(self, center, size, heading: float, label: int, material: Material, instance: int = -1,
                hide=(), tex_origin=(0.0, 0.0, 0.0), tex_heading: float = 0.0) -> None:
        """World-frame box: centre (3,) m, full size (dx, dy, dz) m in its frame, heading rad about z."""
        self._add(BOX, center, size, heading, label, instance, material, hide, tex_origin, tex_heading)

    def add_cylinder(self, center, radius: float, height: float, label: int, material: Material,
                     instance: int = -1, hide=(), tex_origin=(0.0, 0.0, 0.0), tex_heading: float = 0.0) -> None:
        """World-frame vertical cylinder: axis mid-point (3,) m, radius m, height m."""
        self._add(CYLINDER, center, (2 * radius, 2 * radius, height), 0.0, label, instance, material, hide,
                  tex_origin, tex_heading)

    def part_box(self, obj: int, center, size, material: Material, hide=()) -> None:
        """Box part of object ``obj``; centre (3,) and size (3,) in the object's frame."""
        cid, origin, h = self._objects[obj]
        self.add_box(origin + rotz(h) @ np.asarray(center, np.float64), size, h, cid, material, obj, hide,
                     origin, h)

    def part_cylinder(self, obj: int, center, radius: float, height: float, material: Material, hide=()) -> None:
        """Vertical cylinder part of object ``obj``; axis mid-point (3,) in the object's frame."""
        cid, origin, h = self._objects[obj]
        self.add_cylinder(origin + rotz(h) @ np.asarray(center, np.float64), radius, height, cid, material, obj,
                          hide, origin, h)

    def build(self) -> Scene:
        ps = self._prims
        col = lambda k, dt: np.array([p[k] for p in ps], dtype=dt)  # noqa: E731
        mat = lambda k, dt: np.array([getattr(p["material"], k) for p in ps], dtype=dt)  # noqa: E731
        scene = Scene(
            room=np.asarray(self.room, np.float64), has_ceiling=self.has_ceiling,
            kind=col("kind", np.int8), center=col("center", np.float64).reshape(-1, 3),
            size=col("size", np.float64).reshape(-1, 3), heading=col("heading", np.float64),
            label=col("label", np.int64), instance=col("instance", np.int64),
            faces=col("faces", bool).reshape(-1, 6), tex_origin=col("tex_origin", np.float64).reshape(-1, 3),
            tex_heading=col("tex_heading", np.float64), mat_pattern=mat("pattern", np.int64),
            mat_a=mat("color_a", np.float64).reshape(-1, 3), mat_b=mat("color_b", np.float64).reshape(-1, 3),
            mat_freq=mat("freq", np.float64), mat_axis=mat("axis", np.int64), mat_duty=mat("duty", np.float64),
            mat_noise=mat("noise", np.float64), mat_noise_freq=mat("noise_freq", np.float64),
            mat_offset=mat("offset", np.float64).reshape(-1, 3), mat_seed=mat("seed", np.int64),
            boxes=np.zeros((0, 8), np.float32))
        scene.boxes = _object_boxes(scene, self._objects)
        return scene


def _object_boxes(scene: Scene, objects: list) -> np.ndarray:
    """(K, 8) float32 oriented boxes [cx, cy, cz, dx, dy, dz, heading, class] bounding each object's parts."""
    out = np.zeros((len(objects), 8), np.float32)
    corners = scene.corners()
    for k, (cid, origin, h) in enumerate(objects):
        m = scene.instance == k
        if not m.any():
            raise ValueError(f"object {k} ({CLASS_NAMES[cid]}) has no parts")
        local = (corners[m].reshape(-1, 3) - origin) @ rotz(h)              # world -> object frame
        # cylinders: their enclosing box is axis-aligned in the world, the object frame needs the true disk
        cyl = scene.kind[m] == CYLINDER
        if cyl.any():
            c = (scene.center[m][cyl] - origin) @ rotz(h)
            r = scene.size[m][cyl][:, :1] / 2
            z = scene.size[m][cyl][:, 2:] / 2
            box_local = local.reshape(-1, 8, 3)[~cyl].reshape(-1, 3)
            cyl_lo = np.concatenate([c[:, :2] - r, c[:, 2:] - z], 1)
            cyl_hi = np.concatenate([c[:, :2] + r, c[:, 2:] + z], 1)
            local = np.concatenate([box_local, cyl_lo, cyl_hi], 0)
        lo, hi = local.min(0), local.max(0)
        out[k, :3] = origin + rotz(h) @ ((lo + hi) / 2)
        out[k, 3:6] = hi - lo
        out[k, 6] = np.mod(h, 2 * np.pi)
        out[k, 7] = cid
    return out


# ----------------------------------------------------------------------------------- object builders
def _table(b: SceneBuilder, k: int, w: float, d: float, h: float, rng: np.random.Generator) -> None:
    t, leg, inset = 0.04, rng.uniform(0.04, 0.06), rng.uniform(0.02, 0.08)
    top = sample_material("wood", rng, axis=0)
    legs = top if rng.random() < 0.5 else sample_material("metal", rng)
    b.part_box(k, (0, 0, h - t / 2), (w, d, t), top)
    round_legs = rng.random() < 0.4
    for sx in (-1, 1):
        for sy in (-1, 1):
            c = (sx * (w / 2 - inset - leg / 2), sy * (d / 2 - inset - leg / 2), (h - t) / 2)
            if round_legs:
                b.part_cylinder(k, c, leg / 2, h - t, legs, hide=("+z",))
            else:
                b.part_box(k, c, (leg, leg, h - t), legs, hide=("+z",))


def _chair(b: SceneBuilder, k: int, w: float, d: float, seat_h: float, back_h: float,
           rng: np.random.Generator) -> None:
    t, bt, leg = 0.05, 0.04, 0.035
    fabric = sample_material("fabric", rng)
    legs = sample_material(rng.choice(["metal", "wood"]), rng, axis=2)
    b.part_box(k, (0, 0, seat_h - t / 2), (w, d, t), fabric)
    b.part_box(k, (0, -d / 2 + bt / 2, seat_h + back_h / 2), (w, bt, back_h), fabric, hide=("-z",))
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.part_box(k, (sx * (w / 2 - leg / 2), sy * (d / 2 - leg / 2), (seat_h - t) / 2),
                       (leg, leg, seat_h - t), legs, hide=("+z",))


def _base_with_back(b: SceneBuilder, k: int, w: float, d: float, h: float, back_h: float, back_t: float,
                    arm_w: float, arm_h: float, base_mat: Material, back_mat: Material) -> None:
    """Bed and sofa share this geometry: a base block, a back (headboard) and optional arms."""
    depth = d - back_t
    b.part_box(k, (0, back_t / 2, h / 2), (w - 2 * arm_w, depth, h), base_mat,
               hide=("-y",) + (("-x", "+x") if arm_w > 0 else ()))
    b.part_box(k, (0, -d / 2 + back_t / 2, back_h / 2), (w, back_t, back_h), back_mat)
    if arm_w > 0:
        for sx in (-1, 1):
            b.part_box(k, (sx * (w / 2 - arm_w / 2), back_t / 2, arm_h / 2), (arm_w, depth, arm_h), base_mat,
                       hide=("-y",))


def _shelf(b: SceneBuilder, k: int, w: float, d: float, h: float, boards: int, rng: np.random.Generator) -> None:
    pt, bt = 0.02, 0.01
    mat = sample_material("wood", rng, axis=0) if rng.random() < 0.7 else sample_material("paint", rng, axis=2)
    for sx in (-1, 1):
        b.part_box(k, (sx * (w / 2 - pt / 2), 0, h / 2), (pt, d, h), mat)
    b.part_box(k, (0, -d / 2 + bt / 2, h / 2), (w - 2 * pt, bt, h), mat, hide=("-x", "+x"))
    inner_w, inner_d = w - 2 * pt, d - bt
    for z in np.linspace(pt / 2, h - pt / 2, boards):
        b.part_box(k, (0, bt / 2, z), (inner_w, inner_d, pt), mat, hide=("-x", "+x", "-y"))


def _monitor(b: SceneBuilder, k: int, w: float, hs: float, neck_h: float, rng: np.random.Generator) -> None:
    screen, stand = sample_material("screen", rng, axis=2), sample_material("metal", rng)
    b.part_box(k, (0, 0, 0.005), (0.22, 0.16, 0.01), stand, hide=("-z",))
    b.part_box(k, (0, -0.02, 0.01 + neck_h / 2), (0.04, 0.03, neck_h), stand, hide=("-z", "+z"))
    b.part_box(k, (0, -0.02, 0.01 + neck_h + hs / 2), (w, 0.03, hs), screen)


def _lamp(b: SceneBuilder, k: int, rng: np.random.Generator) -> None:
    metal, shade = sample_material("metal", rng), sample_material("shade", rng)
    base_r, base_h = rng.uniform(0.12, 0.18), rng.uniform(0.02, 0.04)
    pole_h, shade_r, shade_h = rng.uniform(1.1, 1.45), rng.uniform(0.15, 0.24), rng.uniform(0.2, 0.3)
    b.part_cylinder(k, (0, 0, base_h / 2), base_r, base_h, metal)
    b.part_cylinder(k, (0, 0, base_h + pole_h / 2), 0.015, pole_h, metal, hide=("-z", "+z"))
    b.part_cylinder(k, (0, 0, base_h + pole_h + shade_h / 2), shade_r, shade_h, shade)


# ------------------------------------------------------------------------------------------- layout
def _rect(cx, cy, hx, hy, h) -> np.ndarray:
    """(4, 2) corners of an oriented rectangle (centre, half extents, heading)."""
    c, s = np.cos(h), np.sin(h)
    loc = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    return loc @ np.array([[c, s], [-s, c]]) + (cx, cy)


def _overlap(a: np.ndarray, b: np.ndarray, clearance: float) -> bool:
    """Separating-axis test of two convex (4, 2) polygons, which must stay ``clearance`` m apart."""
    for poly in (a, b):
        for i in range(4):
            e = poly[(i + 1) % 4] - poly[i]
            n = np.array([-e[1], e[0]]) / np.hypot(*e)
            pa, pb = a @ n, b @ n
            if pa.max() + clearance <= pb.min() or pb.max() + clearance <= pa.min():
                return False
    return True


class _Layout:
    """Footprints placed so far on the floor; proposes free, in-room poses."""

    def __init__(self, room, rng: np.random.Generator, clearance: float = 0.05, margin: float = 0.02):
        self.Lx, self.Ly = room[0], room[1]
        self.rng, self.clearance, self.margin = rng, clearance, margin
        self.rects: list[np.ndarray] = []

    def fits(self, rect: np.ndarray, clearance: float | None = None) -> bool:
        m = self.margin
        if rect[:, 0].min() < m or rect[:, 1].min() < m or rect[:, 0].max() > self.Lx - m \
                or rect[:, 1].max() > self.Ly - m:
            return False
        c = self.clearance if clearance is None else clearance
        return not any(_overlap(rect, r, c) for r in self.rects)

    def take(self, rect: np.ndarray) -> None:
        self.rects.append(rect)

    def free(self, hx: float, hy: float, aligned: float = 0.7, tries: int = 60):
        """Random (x, y, heading) whose rectangle fits; heading near a multiple of 90 deg with prob ``aligned``."""
        rng = self.rng
        for _ in range(tries):
            h = (rng.integers(0, 4) * np.pi / 2 + rng.normal(0, 0.05)) if rng.random() < aligned \
                else rng.uniform(0, 2 * np.pi)
            x, y = rng.uniform(0, self.Lx), rng.uniform(0, self.Ly)
            r = _rect(x, y, hx, hy, h)
            if self.fits(r):
                self.take(r)
                return x, y, h
        return None

    def against_wall(self, hx: float, hy: float, tries: int = 40):
        """(x, y, heading) with the object's back (local -y) against a random wall."""
        rng = self.rng
        for _ in range(tries):
            wall = rng.integers(0, 4)
            gap = rng.uniform(0.03, 0.08)
            along = self.Lx if wall in (0, 2) else self.Ly
            if along < 2 * hx + 0.1:
                continue
            s = rng.uniform(hx + 0.05, along - hx - 0.05)
            x, y, h = [(s, hy + gap, 0.0), (self.Lx - hy - gap, s, np.pi / 2),
                       (s, self.Ly - hy - gap, np.pi), (hy + gap, s, 1.5 * np.pi)][wall]
            r = _rect(x, y, hx, hy, h)
            if self.fits(r):
                self.take(r)
                return x, y, h
        return None


def _place_on_table(b: SceneBuilder, rng: np.random.Generator, table: tuple, items: list, label: str) -> None:
    """Put a monitor or a box on a table top (non-overlapping with the other items there)."""
    x, y, h, w, d, top = table
    if label == "monitor":
        mw, hs = rng.uniform(0.45, 0.65), rng.uniform(0.28, 0.4)
        hx, hy = mw / 2, 0.08
    else:
        bw, bd, bh = rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.35), rng.uniform(0.1, 0.35)
        hx, hy = bw / 2, bd / 2
    for _ in range(20):
        lh = rng.integers(0, 4) * np.pi / 2 + rng.normal(0, 0.1)
        lx, ly = rng.uniform(-w / 2, w / 2), rng.uniform(-d / 2, d / 2)
        r = _rect(lx, ly, hx, hy, lh)
        inside = (np.abs(r[:, 0]) <= w / 2 - 0.02).all() and (np.abs(r[:, 1]) <= d / 2 - 0.02).all()
        if inside and not any(_overlap(r, o, 0.03) for o in items):
            items.append(r)
            origin = np.array([x, y, 0.0]) + rotz(h) @ np.array([lx, ly, top])
            k = b.add_object(label, origin, h + lh)
            if label == "monitor":
                _monitor(b, k, mw, hs, rng.uniform(0.08, 0.12), rng)
            else:
                b.part_box(k, (0, 0, bh / 2), (bw, bd, bh), sample_material("cardboard", rng), hide=("-z",))
            return


def generate_scene(rng: np.random.Generator, room_size: tuple | None = None, ceiling_prob: float = 0.6) -> Scene:
    """A random furnished room. room_size: (Lx, Ly, Lz) m or None for random (4-7.5 x 3.5-6.5 x 2.5-3.0 m)."""
    u = rng.uniform
    if room_size is None:
        room_size = (u(4.0, 7.5), u(3.5, 6.5), u(2.5, 3.0))
    Lx, Ly, Lz = (float(v) for v in room_size)
    b = SceneBuilder(room=(Lx, Ly, Lz), has_ceiling=bool(rng.random() < ceiling_prob))
    t = 0.1   # slab thickness of floor, walls, ceiling (outside the interior)
    b.add_box((Lx / 2, Ly / 2, -t / 2), (Lx, Ly, t), 0.0, _CID["floor"], sample_material("floor", rng),
              hide=("-x", "+x", "-y", "+y", "-z"))
    wall_mat = sample_material("wall", rng)
    for center, size, hide, axis in [
            ((Lx / 2, -t / 2, Lz / 2), (Lx, t, Lz), ("-x", "+x", "-y", "-z", "+z"), 0),
            ((Lx / 2, Ly + t / 2, Lz / 2), (Lx, t, Lz), ("-x", "+x", "+y", "-z", "+z"), 0),
            ((-t / 2, Ly / 2, Lz / 2), (t, Ly, Lz), ("-x", "-y", "+y", "-z", "+z"), 1),
            ((Lx + t / 2, Ly / 2, Lz / 2), (t, Ly, Lz), ("+x", "-y", "+y", "-z", "+z"), 1)]:
        m = replace(wall_mat, axis=axis)
        b.add_box(center, size, 0.0, _CID["wall"], m, hide=hide)
    if b.has_ceiling:
        b.add_box((Lx / 2, Ly / 2, Lz + t / 2), (Lx, Ly, t), 0.0, _CID["ceiling"], sample_material("ceiling", rng),
                  hide=("-x", "+x", "-y", "+y", "+z"))

    lay = _Layout((Lx, Ly), rng)
    # furniture against the walls first (largest first), then free-standing
    if rng.random() < 0.55:
        w, d = u(0.9, 1.8), u(1.7, 2.1)
        p = lay.against_wall(w / 2, d / 2)
        if p:
            k = b.add_object("bed", (p[0], p[1], 0.0), p[2])
            _base_with_back(b, k, w, d, u(0.4, 0.6), u(0.9, 1.15), u(0.05, 0.1), 0.0, 0.0,
                            sample_material("sheet", rng, axis=0), sample_material("wood", rng, axis=0))
    if rng.random() < 0.6:
        w, d = u(1.4, 2.3), u(0.8, 1.0)
        p = lay.against_wall(w / 2, d / 2)
        if p:
            k = b.add_object("sofa", (p[0], p[1], 0.0), p[2])
            mat = sample_material("upholstery", rng)
            arm = u(0.12, 0.22) if rng.random() < 0.7 else 0.0
            _base_with_back(b, k, w, d, u(0.38, 0.48), u(0.75, 0.95), u(0.15, 0.22), arm, u(0.55, 0.65), mat, mat)
    for _ in range(rng.integers(0, 3)):
        w, d, h = u(0.6, 1.2), u(0.28, 0.42), u(1.2, 2.0)
        p = lay.against_wall(w / 2, d / 2)
        if p:
            _shelf(b, b.add_object("shelf", (p[0], p[1], 0.0), p[2]), w, d, h, int(rng.integers(3, 6)), rng)
    for _ in range(rng.integers(0, 3)):
        w, d, h = u(0.4, 1.0), u(0.35, 0.6), u(0.45, 0.95)
        p = lay.against_wall(w / 2, d / 2)
        if p:
            k = b.add_object("cabinet", (p[0], p[1], 0.0), p[2])
            b.part_box(k, (0, 0, h / 2), (w, d, h), sample_material("paint", rng, axis=0))

    tables = []
    for _ in range(rng.integers(1, 3)):
        w, d, h = u(0.8, 1.8), u(0.6, 1.0), u(0.7, 0.78)
        p = lay.free(w / 2, d / 2)
        if p:
            _table(b, b.add_object("table", (p[0], p[1], 0.0), p[2]), w, d, h, rng)
            tables.append((p[0], p[1], p[2], w, d, h))
    n_chairs = int(rng.integers(1, 5))
    for i in range(n_chairs):
        w, d, sh, bh = u(0.4, 0.5), u(0.4, 0.5), u(0.42, 0.48), u(0.35, 0.5)
        p = None
        if tables and rng.random() < 0.8:   # pushed up to a table, facing it
            x, y, h, tw, td, _ = tables[rng.integers(0, len(tables))]
            for _ in range(10):
                side = rng.integers(0, 4)
                nrm = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]][side], float)
                half = tw / 2 if side < 2 else td / 2
                along = (td / 2 if side < 2 else tw / 2) - w / 2
                s = u(-along, along) if along > 0 else 0.0
                loc = nrm * (half + u(0.08, 0.2) + d / 2) + np.array([-nrm[1], nrm[0]]) * s
                c = rotz(h)[:2, :2] @ loc + (x, y)
                f = -(rotz(h)[:2, :2] @ nrm)                   # chair front (+y local) faces the table
                ch = np.arctan2(-f[0], f[1]) + rng.normal(0, 0.08)
                r = _rect(c[0], c[1], w / 2, d / 2, ch)
                if lay.fits(r):
                    lay.take(r)
                    p = (c[0], c[1], ch)
                    break
        if p is None:
            p = lay.free(w / 2, d / 2, aligned=0.3)
        if p:
            _chair(b, b.add_object("chair", (p[0], p[1], 0.0), p[2]), w, d, sh, bh, rng)
    for _ in range(rng.integers(0, 3)):
        p = lay.free(0.25, 0.25, aligned=0.0)
        if p:
            _lamp(b, b.add_object("lamp", (p[0], p[1], 0.0), p[2]), rng)
    for _ in range(rng.integers(0, 4)):
        w, d, h = u(0.3, 0.7), u(0.3, 0.6), u(0.25, 0.7)
        p = lay.free(w / 2, d / 2)
        if p:
            k = b.add_object("box", (p[0], p[1], 0.0), p[2])
            b.part_box(k, (0, 0, h / 2), (w, d, h), sample_material("cardboard", rng))
    for x, y, h, w, d, th in tables:
        items: list = []
        if rng.random() < 0.7:
            _place_on_table(b, rng, (x, y, h, w, d, th), items, "monitor")
        for _ in range(rng.integers(0, 3)):
            _place_on_table(b, rng, (x, y, h, w, d, th), items, "box")
    return b.build()
