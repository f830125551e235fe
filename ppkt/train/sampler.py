"""A deterministic stream of training batches that can start at any iteration (exact resume), and the
DataLoader worker init used beside it."""
from __future__ import annotations

import signal
from typing import Iterator, List, Tuple

import torch
from torch.utils.data import Sampler


def sample_seed(seed: int, position: int) -> int:
    """Augmentation seed of the sample at `position` of the stream: the same whoever loads it, and when."""
    return (seed * 1_000_003 + position * 7_919 + 12_345) % (2**63 - 1)


class IterationBatchSampler(Sampler[List[Tuple[int, int]]]):
    """Batches for iterations [start, stop): epoch e is a permutation of the n frames seeded by (seed, e).

    The global batch of iteration i is positions i*B .. i*B+B-1 of the endless stream; process `rank` of
    `world_size` takes every world_size-th of them. Items are (frame index, augmentation seed).
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"train.batch_size={batch_size} must be divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def _epoch(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        cached_epoch, perm = -1, None
        for it in range(self.start, self.stop):
            batch = []
            for pos in range(it * self.batch_size + self.rank, (it + 1) * self.batch_size, self.world_size):
                epoch = pos // self.n
                if epoch != cached_epoch:
                    cached_epoch, perm = epoch, self._epoch(epoch)
                batch.append((int(perm[pos % self.n]), sample_seed(self.seed, pos)))
            yield batch


def one_thread_worker(_: int) -> None:
    """DataLoader `worker_init_fn`: one torch thread per loading process (workers must not compete with training),
    and Ctrl-C left to the training process (`ppkt.train.interrupt`), which stops after saving."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
