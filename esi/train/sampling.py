"""A resumable, rank-aware batch sampler.

Each epoch is one seeded permutation of the dataset, split evenly across ranks; resuming mid-epoch skips the
batches already done. Its randomness comes only from (seed, epoch), never from the global RNG, so an
interrupted-and-resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class ResumableBatchSampler:
    """Yields lists of dataset indices; one batch per rank per step.

    n: dataset size. batch_size: per-rank batch size. rank/world_size: this process's share.
    shuffle: permute each epoch with seed (seed, epoch). drop_last: drop the incomplete last global batch (it is
    always dropped when training with several ranks, so every rank does the same number of steps).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.batch_size = n, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation; `start_batch` skips batches already done (resume)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def _global_batches(self) -> int:
        per_step = self.batch_size * self.world_size
        return self.n // per_step if self.drop_last else -(-self.n // per_step)

    def __len__(self) -> int:
        return self._global_batches()

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        per_step = self.batch_size * self.world_size
        for b in range(self.start_batch, self._global_batches()):
            chunk = order[b * per_step:(b + 1) * per_step]
            mine = chunk[self.rank::self.world_size]      # interleaved: ranks get equal shares of a short tail
            if len(mine) == 0:
                continue
            yield mine.tolist()
