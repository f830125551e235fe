"""An independent reference for the detection tests: which points lie inside an oriented box, point by point."""
import numpy as np


def points_in_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) bool: which points (N, 3) lie inside the oriented box (its own frame: |x| <= dx/2, ...)."""
    d = np.asarray(points, dtype=np.float64) - box[:3]
    c, s = np.cos(box[6]), np.sin(box[6])
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
    return (np.abs(local) <= np.asarray(box[3:6]) / 2 + 1e-9).all(1)
