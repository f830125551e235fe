"""The detector's diagnosis: a point inside an oriented box, against hand-computed cases."""
import math

import numpy as np

from ppkt.detection.diagnose import inside_boxes


def test_points_inside_an_oriented_box_by_hand():
    # a 2 x 1 x 1 m box at (1, 1, 0.5) turned by 90 degrees: its long side now runs along y (y in [0, 2], x in [0.5, 1.5])
    box = np.array([[1.0, 1.0, 0.5, 2.0, 1.0, 1.0, math.pi / 2, 0]])
    points = np.array([[1.0, 1.9, 0.5],   # inside: along y within 1 m of the centre
                       [1.9, 1.0, 0.5],   # outside: along x beyond 0.5 m (inside if the box were not turned)
                       [1.4, 0.1, 0.9],   # inside, near a corner
                       [1.0, 1.0, 1.1]])  # outside: above the top
    assert inside_boxes(points, box).tolist() == [[True, False, True, False]]
    assert inside_boxes(points, np.zeros((0, 8))).shape == (0, 4)
