"""Test helpers shared across folders (writers of dataset files that follow the published formats) and fixtures."""
import sys
from pathlib import Path

import pytest

import ppkt  # noqa: F401  (first: sets OMP_WAIT_POLICY=PASSIVE before torch loads OpenMP)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))


def _torch_threads(n: int):
    """Run the test with n torch threads (0: leave them), then give the next tests back what they had."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def one_thread():
    """1 thread: on 2 shared cores, 2 OpenMP threads slow down 5-10x as soon as anything else runs (every small op
    forks and joins a team), and tests of networks do not test threading (test_spconv_cpu checks 2 threads)."""
    yield from _torch_threads(1)


@pytest.fixture
def two_threads():
    yield from _torch_threads(2)


@pytest.fixture
def keep_torch_threads():
    """For tests whose runs set torch's thread count themselves (train.threads)."""
    yield from _torch_threads(0)
