"""Synthetic world: analytic ray casting, back-projection onto the scene point cloud, scene generation."""
import numpy as np
import pytest
import torch

from ppkt.geometry.backproject import backproject
from ppkt.synthetic import (CLASS_NAMES, IGNORE_LABEL, NUM_CLASSES, SceneBuilder, add_depth_noise, camera_trajectory,
                            cast_rays, default_intrinsics, generate_scene, look_at, render_frame, sample_material,
                            sample_surface)
from ppkt.synthetic.render import pixel_rays
from ppkt.synthetic.scene import STRUCTURE_CLASSES, _overlap, _rect

HW = (60, 80)


# --------------------------------------------------------------------------------------- analytic depth
BOX_C, BOX_SIZE, BOX_H = np.array([0.3, 3.0, 0.5]), np.array([1.0, 0.6, 0.8]), 0.6
CYL_C, CYL_R, CYL_HEIGHT = np.array([-0.9, 3.5, 0.4]), 0.3, 1.2


def _two_primitive_scene():
    rng = np.random.default_rng(0)
    b = SceneBuilder(room=(10.0, 10.0, 3.0), has_ceiling=False)
    k = b.add_object("cabinet", BOX_C - [0, 0, BOX_SIZE[2] / 2], BOX_H)
    b.part_box(k, (0, 0, BOX_SIZE[2] / 2), BOX_SIZE, sample_material("paint", rng))
    k = b.add_object("lamp", CYL_C - [0, 0, CYL_HEIGHT / 2], 0.0)
    b.part_cylinder(k, (0, 0, CYL_HEIGHT / 2), CYL_R, CYL_HEIGHT, sample_material("shade", rng))
    return b.build()


def _box_hit(o, d):
    """Nearest front face of the box, solved plane by plane: t (R,), world normal (R, 3)."""
    c, s = np.cos(BOX_H), np.sin(BOX_H)
    axes = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])   # box axes in world coordinates
    best, normal = np.full(len(d), np.inf), np.zeros((len(d), 3))
    for a in range(3):
        for sign in (-1.0, 1.0):
            n = sign * axes[a]
            offset = n @ BOX_C + BOX_SIZE[a] / 2                        # face plane: n . x = offset
            nd = d @ n
            with np.errstate(divide="ignore"):
                t = (offset - n @ o) / nd
            q = o + t[:, None] * d
            inside = np.ones(len(d), bool)
            for b in range(3):
                if b != a:
                    inside &= np.abs((q - BOX_C) @ axes[b]) <= BOX_SIZE[b] / 2 + 1e-12
            ok = (nd < 0) & (t > 0) & inside & (t < best)
            best[ok], normal[ok] = t[ok], n
    return best, normal


def _cylinder_hit(o, d):
    """Nearest hit on the cylinder: side from the quadratic, caps from their planes. t (R,)."""
    rel = o - CYL_C
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (rel[0] * d[:, 0] + rel[1] * d[:, 1])
    c = rel[0] ** 2 + rel[1] ** 2 - CYL_R ** 2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / (2 * a)
        z_side = rel[2] + t_side * d[:, 2]
        best = np.where((disc >= 0) & (t_side > 0) & (np.abs(z_side) <= CYL_HEIGHT / 2), t_side, np.inf)
        for zc in (-CYL_HEIGHT / 2, CYL_HEIGHT / 2):
            t = (zc - rel[2]) / d[:, 2]
            q = rel + t[:, None] * d
            ok = (t > 0) & (q[:, 0] ** 2 + q[:, 1] ** 2 <= CYL_R ** 2) & (t < best)
            best[ok] = t[ok]
    return best


def test_depth_labels_normals_match_analytic_intersections():
    scene = _two_primitive_scene()
    K = default_intrinsics(*HW)
    pose = look_at((-0.2, 0.0, 0.9), np.pi / 2, -0.15, 0.05)
    fr = render_frame(scene, K, pose, HW)
    v, u = np.divmod(np.arange(HW[0] * HW[1]), HW[1])
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], 1) @ pose[:3, :3].T
    o = pose[:3, 3]
    t_box, n_box = _box_hit(o, d)
    t_cyl = _cylinder_hit(o, d)
    expected = np.minimum(t_box, t_cyl)                # t is the camera z depth: the ray has camera z = 1
    depth, sem, inst = fr.depth.reshape(-1), fr.semantic.reshape(-1), fr.instance.reshape(-1)
    hit_box, hit_cyl, miss = t_box < t_cyl, t_cyl < t_box, ~np.isfinite(expected)
    assert hit_box.sum() > 200 and hit_cyl.sum() > 100 and miss.sum() > 200   # all three cases covered
    np.testing.assert_allclose(depth[~miss], expected[~miss], rtol=1e-6, atol=1e-6)
    assert (depth[miss] == 0).all() and (sem[miss] == IGNORE_LABEL).all() and (inst[miss] == 0).all()
    assert (sem[hit_box] == CLASS_NAMES.index("cabinet")).all() and (inst[hit_box] == 1).all()
    assert (sem[hit_cyl] == CLASS_NAMES.index("lamp")).all() and (inst[hit_cyl] == 2).all()
    normal = fr.normal.reshape(-1, 3)
    # box normals: exact face normals (pixels on an edge may take either face; require 99%)
    assert (np.abs(normal[hit_box] - n_box[hit_box]).max(1) < 1e-5).mean() > 0.99
    assert (fr.color.reshape(-1, 3)[miss] == 0).all() and (fr.color.reshape(-1, 3)[~miss].max(1) > 0).all()


def test_screen_space_culling_loses_no_hit():
    """The renderer tests each primitive only on the pixels of its projected box; brute force must agree."""
    rng = np.random.default_rng(8)
    scene = generate_scene(rng)
    hw = (30, 40)
    K = default_intrinsics(*hw)
    for pose in camera_trajectory(scene, 4, rng):
        fr = render_frame(scene, K, pose, hw)
        _, dirs = pixel_rays(K, hw, pose)
        t, prim = cast_rays(scene, pose[:3, 3], dirs)
        np.testing.assert_array_equal(fr.depth.reshape(-1), np.where(prim >= 0, t, 0).astype(np.float32))
        np.testing.assert_array_equal(fr.semantic.reshape(-1), np.where(prim >= 0, scene.label[prim], 255))


def test_scene_boxes_bound_their_parts():
    scene = _two_primitive_scene()
    np.testing.assert_allclose(scene.boxes[0], [*BOX_C, *BOX_SIZE, BOX_H, CLASS_NAMES.index("cabinet")], atol=1e-6)
    np.testing.assert_allclose(scene.boxes[1], [*CYL_C, 2 * CYL_R, 2 * CYL_R, CYL_HEIGHT, 0.0,
                                                CLASS_NAMES.index("lamp")], atol=1e-6)


# ----------------------------------------------------------------------- frames vs the scene point cloud
def _nearest(queries, cloud, radius):
    """Distance (Q,) to and index (Q,) of the nearest cloud point (exact where it is closer than ``radius``):
    brute force over spatially sorted chunks of queries against the cloud points in each chunk's box."""
    order = torch.argsort((queries[:, 0] / 0.3).floor() * 1e6 + (queries[:, 1] / 0.3).floor() * 1e3
                          + (queries[:, 2] / 0.3).floor())
    dist, idx = torch.empty(len(queries), dtype=queries.dtype), torch.empty(len(queries), dtype=torch.long)
    for chunk in order.split(200):
        q = queries[chunk]
        lo, hi = q.min(0).values - radius, q.max(0).values + radius
        cand = torch.nonzero(((cloud >= lo) & (cloud <= hi)).all(1)).squeeze(1)
        if len(cand) == 0:
            dist[chunk] = float("inf")
            continue
        d, i = torch.cdist(q, cloud[cand]).min(1)
        dist[chunk], idx[chunk] = d, cand[i]
    return dist, idx


@pytest.mark.parametrize("seed", [3, 11])
def test_backprojected_frames_lie_on_the_point_cloud(seed):
    """Every valid pixel lifted with its pose lies within the sampling spacing of a scene point; its label
    equals that point's label except at label boundaries (allowed: 1% of pixels; measured ~0.1%)."""
    spacing = 0.02
    rng = np.random.default_rng(seed)
    scene = generate_scene(rng)
    pc = sample_surface(scene, spacing, jitter=0.25, rng=rng)
    cloud, seg = torch.from_numpy(pc.coord).double(), torch.from_numpy(pc.segment).long()
    K = default_intrinsics(*HW)
    for pose in camera_trajectory(scene, 3, rng)[::2]:
        fr = render_frame(scene, K, pose, HW)
        bp = backproject(torch.from_numpy(fr.depth), torch.from_numpy(K), pose=torch.from_numpy(pose))
        pts = bp.points.double()
        assert len(pts) > 0.9 * HW[0] * HW[1] or not scene.has_ceiling
        dist, nearest = _nearest(pts, cloud, spacing)
        assert dist.max() < 0.9 * spacing, f"pixel {float(dist.max()):.4f} m from the nearest scene point"
        label = torch.from_numpy(fr.semantic.reshape(-1).astype(np.int64))[bp.pixel_index]
        assert (seg[nearest] != label).float().mean() < 0.01


# ------------------------------------------------------------------------------------- scene generation
def test_every_class_appears_and_objects_stay_inside_the_room():
    seen = set()
    for s in range(6):
        scene = generate_scene(np.random.default_rng(s))
        seen |= set(scene.label.tolist())
        Lx, Ly, Lz = scene.room
        obj = scene.instance >= 0
        corners = scene.corners()[obj]
        assert (corners[..., 0] >= -1e-9).all() and (corners[..., 0] <= Lx + 1e-9).all()
        assert (corners[..., 1] >= -1e-9).all() and (corners[..., 1] <= Ly + 1e-9).all()
        assert (corners[..., 2] >= -1e-9).all() and (corners[..., 2] <= Lz).all()
        assert ((scene.instance < 0) == np.isin(scene.label, STRUCTURE_CLASSES)).all()
        assert sorted(set(scene.instance[obj].tolist())) == list(range(scene.num_objects))
        # objects standing on the floor have disjoint footprints
        floor = [b for b in scene.boxes if abs(b[2] - b[5] / 2) < 1e-5]
        rects = [_rect(b[0], b[1], b[3] / 2, b[4] / 2, b[6]) for b in floor]
        assert not any(_overlap(rects[i], rects[j], 0.0) for i in range(len(rects)) for j in range(i))
    assert seen == set(range(NUM_CLASSES)), f"missing {[CLASS_NAMES[c] for c in set(range(NUM_CLASSES)) - seen]}"


def test_generation_is_seeded():
    a, b, c = (generate_scene(np.random.default_rng(s)) for s in (5, 5, 6))
    for name in ("center", "size", "heading", "label", "mat_a", "boxes"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.center.shape != c.center.shape or not np.array_equal(a.center, c.center)


def test_point_cloud_labels_normals_and_boxes():
    scene = generate_scene(np.random.default_rng(2))
    pc = sample_surface(scene, 0.03)
    assert pc.coord.dtype == np.float32 and pc.color.dtype == np.uint8 and pc.normal.dtype == np.float32
    assert pc.segment.dtype == np.int16 and pc.instance.dtype == np.int32
    np.testing.assert_allclose(np.linalg.norm(pc.normal, axis=1), 1.0, atol=1e-5)
    Lx, Ly, Lz = scene.room
    lo, hi = np.array([0, 0, 0]) - 1e-5, np.array([Lx, Ly, Lz]) + 1e-5
    assert ((pc.coord >= lo) & (pc.coord <= hi)).all()          # only interior faces of floor / walls / ceiling
    assert set(np.unique(pc.segment).tolist()) == set(scene.label.tolist())
    assert ((pc.instance < 0) == np.isin(pc.segment, STRUCTURE_CLASSES)).all()
    for k, (cx, cy, cz, dx, dy, dz, h, cls) in enumerate(scene.boxes):
        p = pc.coord[pc.instance == k] - [cx, cy, cz]
        local = np.stack([np.cos(h) * p[:, 0] + np.sin(h) * p[:, 1], -np.sin(h) * p[:, 0] + np.cos(h) * p[:, 1],
                          p[:, 2]], 1)
        assert len(p) > 0 and (np.abs(local) <= np.array([dx, dy, dz]) / 2 + 1e-4).all()
        assert (pc.segment[pc.instance == k] == cls).all()


def test_frame_outputs_and_trajectory():
    rng = np.random.default_rng(4)
    scene = generate_scene(rng)
    poses = camera_trajectory(scene, 12, rng)
    Lx, Ly = scene.room[:2]
    pos = poses[:, :3, 3]
    assert ((pos[:, 2] >= 1.2) & (pos[:, 2] <= 1.8)).all()
    assert ((pos[:, 0] >= 0.6 - 1e-9) & (pos[:, 0] <= Lx - 0.6 + 1e-9)).all()
    assert ((pos[:, 1] >= 0.6 - 1e-9) & (pos[:, 1] <= Ly - 0.6 + 1e-9)).all()
    for cx, cy, _, dx, dy, _, h, _ in scene.boxes:   # never inside an object's footprint grown by 0.25 m
        rel = pos[:, :2] - [cx, cy]
        lx, ly = rel @ [np.cos(h), np.sin(h)], rel @ [-np.sin(h), np.cos(h)]
        assert ((np.abs(lx) >= dx / 2 + 0.25) | (np.abs(ly) >= dy / 2 + 0.25)).all()
    forward = poses[:, :3, 2]
    pitch = np.degrees(np.arcsin(forward[:, 2]))
    assert ((pitch >= -30.5) & (pitch <= -7.5)).all()
    for R in poses[:, :3, :3]:
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) > 0
    K = default_intrinsics(*HW)
    fr = render_frame(scene, K, poses[0], HW)
    assert fr.color.shape == (*HW, 3) and fr.color.dtype == np.uint8
    assert fr.depth.shape == HW and fr.depth.dtype == np.float32
    assert fr.semantic.dtype == np.uint8 and fr.instance.dtype == np.int32
    assert fr.intrinsics.shape == (3, 3) and fr.pose.shape == (4, 4)
    valid = fr.depth > 0
    assert ((fr.semantic == IGNORE_LABEL) == ~valid).all()
    assert (fr.instance[~valid] == 0).all()
    assert np.isin(fr.semantic[valid], range(NUM_CLASSES)).all()


def test_depth_noise():
    rng = np.random.default_rng(0)
    depth = np.full((120, 160), 2.0, np.float32)
    depth[:, :40] = 0.0
    clean = add_depth_noise(depth, rng, dropout=0, holes=0, edge_dropout=0)
    valid = depth > 0
    assert (clean[~valid] == 0).all() and (clean[valid] > 0).all()
    assert abs(np.std(clean[valid] - 2.0) / (0.0015 * 2.0 ** 2) - 1) < 0.05     # std = 0.0015 * depth^2
    noisy = add_depth_noise(depth, np.random.default_rng(1), holes=3, dropout=0.01)
    assert 0.005 < (noisy[valid] == 0).mean() < 0.3
    np.testing.assert_array_equal(noisy, add_depth_noise(depth, np.random.default_rng(1), holes=3, dropout=0.01))
