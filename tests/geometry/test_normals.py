"""Normals against geometry known by hand: a cube's corners, a sphere's radii."""
import numpy as np
import pytest

from ppkt.geometry.normals import estimate_normals, mesh_vertex_normals


def test_mesh_vertex_normals_of_a_cube_point_out_of_its_corners():
    v = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=float)  # index = x + 2y + 4z
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]  # outward, CCW
    faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    n = mesh_vertex_normals(v, faces)
    # each corner touches 3 faces; with two triangles per face the weights differ per corner, so check the signs
    # and unit length, and the exact direction at the corners where the weights are equal (0 and 7)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(np.sign(n), np.sign(v - 0.5))
    assert np.allclose(n[0], -np.ones(3) / np.sqrt(3), atol=1e-6) and np.allclose(n[7], np.ones(3) / np.sqrt(3), atol=1e-6)
    assert np.allclose(mesh_vertex_normals(np.vstack([v, [[5, 5, 5]]]), faces)[8], 0.0)  # an unused vertex


def test_estimated_normals_of_a_sphere_are_its_radii_pointing_to_the_given_side():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(4000, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    inward = estimate_normals(p, k=12, towards=np.zeros(3), chunk=1000)  # chunks give the same answer
    assert np.percentile(np.abs((inward * -p).sum(1) - 1), 99) < 0.01
    up = estimate_normals(p, k=12)  # no reference: the +z side
    assert (up[:, 2] >= 0).all()
    with pytest.raises(ValueError, match="at least 3 points"):
        estimate_normals(p[:2])
