"""Flushing denormals is a training-time setting: the CPU's default is back after a run (scipy relies on it)."""
import numpy as np
import torch

from ppkt.device import flush_denormals


def test_denormals_are_flushed_inside_the_block_only():
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # a float32 denormal
    with flush_denormals(torch.device("cpu")):
        assert (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() > 0.0
    from scipy.spatial import cKDTree  # crashed here (segmentation fault) while the flush mode was left on

    p = np.random.default_rng(0).uniform(size=(2000, 3))
    assert cKDTree(p).query(p[:3], k=2)[0].shape == (3, 2)
