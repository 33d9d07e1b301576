"""The order of the training data: shuffled, optionally bucketed by caption length, and
split across the processes of a torchrun job.

One :class:`BucketBatchSampler` serves one process and multi-GPU runs alike. It cuts a
permutation of the whole dataset into *global* batches of ``batch_size x world_size`` images,
and of N processes, process r takes images r, r + N, r + 2N, ... of each. So the images that
the N processes see together at a step are exactly the batch one process with an N times
larger batch would see, and every process takes the same number of steps (DDP needs that,
or the last all-reduce waits forever).

With bucketing, the permutation is cut into pools of ``pool_batches`` global batches; each
pool is sorted by length (the longest caption of each image) and cut into batches, and the
batches are shuffled. Batches then hold images with similar caption lengths, so the decoder
pads and loops less, while the order stays random at the scale of an epoch (the "sortish"
sampler of fairseq and Hugging Face).

The order of epoch e depends only on (seed, e), never on the process or on earlier epochs:
a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int] | None, n: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, bucket: bool = True, pool_batches: int = 50):
        """lengths: one sort key per item (None: plain shuffling); n: items in the dataset;
        batch_size: items per batch of this process."""
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} items")
        if n < 1 or batch_size < 1:
            raise ValueError("need at least one item and a batch size of at least 1")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long) if lengths is not None and bucket else None
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.pool_batches = pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """The batches of all processes together for the current epoch."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        size = self.batch_size * self.world_size
        if self.lengths is None:
            batches = list(perm.split(size))
        else:
            batches = []
            for pool in perm.split(size * self.pool_batches):
                # A stable sort keeps the random order among equal lengths.
                pool = pool[torch.sort(self.lengths[pool], stable=True).indices]
                batches.extend(pool.split(size))
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        out = [b.tolist() for b in batches]
        if self.world_size > 1:
            # Each process needs an equal slice of every batch: a batch that does not divide
            # (at most one, the tail of the permutation) is topped up with the epoch's first
            # images, as DistributedSampler pads.
            first = perm[:self.world_size].tolist() * self.world_size  # enough even if n < world_size
            for b in out:
                b.extend(first[:-len(b) % self.world_size])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.global_batches():
            # Every world_size-th image: a sorted batch gives each process as long captions
            # as the others, so none waits for a slower one.
            yield b[self.rank::self.world_size]

    def __len__(self) -> int:
        return -(-self.n // (self.batch_size * self.world_size))
