"""Box-consistent augmentation of a scene for detection: the points and their (K, 7) boxes move together, so every
box keeps the same points inside (flips of x and y, rotation about z, isotropic scaling; angles in radians)."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def flip_x(points: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror x -> -x: centres mirrored, heading -> pi - heading."""
    p, b = points.copy(), boxes.copy()
    p[:, 0], b[:, 0], b[:, 6] = -p[:, 0], -b[:, 0], np.pi - b[:, 6]
    return p, b


def flip_y(points: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror y -> -y: centres mirrored, heading -> -heading."""
    p, b = points.copy(), boxes.copy()
    p[:, 1], b[:, 1], b[:, 6] = -p[:, 1], -b[:, 1], -b[:, 6]
    return p, b


def rotate_z(points: np.ndarray, boxes: np.ndarray, angle: float) -> Tuple[np.ndarray, np.ndarray]:
    """Turn everything by `angle` about the z axis through the origin: heading + angle."""
    c, s = np.cos(angle), np.sin(angle)
    r = np.array([[c, -s], [s, c]])
    p, b = points.copy(), boxes.copy()
    p[:, :2], b[:, :2] = p[:, :2] @ r.T, b[:, :2] @ r.T
    b[:, 6] = b[:, 6] + angle
    return p, b


def scale(points: np.ndarray, boxes: np.ndarray, factor: float) -> Tuple[np.ndarray, np.ndarray]:
    """Scale about the origin: coordinates, centres and sizes times `factor` (> 0)."""
    if not factor > 0:
        raise ValueError(f"scale: factor must be > 0, got {factor}")
    p, b = points * factor, boxes.copy()
    b[:, :6] *= factor
    return p, b


def random_augment(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, rotation: float = np.pi / 6,
                   scale_range: Tuple[float, float] = (0.85, 1.15), mirror_y: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """VoteNet's training augmentation: flip x and (mirror_y) flip y with probability 1/2 each, a rotation about z
    uniform in [-rotation, rotation] radians, a scale uniform in scale_range. VoteNet flips only x for SUN RGB-D's
    single views (a y flip would look from behind the camera) and rotates ScanNet by at most 5 degrees, unscaled."""
    if rng.random() < 0.5:
        points, boxes = flip_x(points, boxes)
    if mirror_y and rng.random() < 0.5:
        points, boxes = flip_y(points, boxes)
    points, boxes = rotate_z(points, boxes, rng.uniform(-rotation, rotation))
    return scale(points, boxes, rng.uniform(*scale_range))
