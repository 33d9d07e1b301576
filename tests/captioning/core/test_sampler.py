"""The bucketing batch sampler: coverage, determinism per (seed, epoch), and the split
across torchrun processes that makes N processes x batch b equal 1 process x batch N*b."""

import random
from collections import Counter

import pytest

from captioning.core.sampler import BucketBatchSampler
from captioning.data import CaptionDataset
from tests.conftest import IMAGE_SIZE


def lengths(n, seed=0):
    rng = random.Random(seed)
    return [rng.randint(8, 20) for _ in range(n)]


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("n,batch", [(103, 8), (96, 8), (5, 8)])
def test_every_image_exactly_once_per_epoch(n, batch, bucket):
    s = BucketBatchSampler(lengths(n), n, batch, seed=3, bucket=bucket, pool_batches=4)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == -(-n // batch)
        assert all(1 <= len(b) <= batch for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(n))


def test_order_depends_only_on_seed_and_epoch():
    keys = lengths(200)
    a = BucketBatchSampler(keys, 200, 16, seed=7, pool_batches=3)
    b = BucketBatchSampler(keys, 200, 16, seed=7, pool_batches=3)
    a.set_epoch(0)
    first = list(a)
    for epoch in (1, 2):  # b jumps straight to epoch 2, as a resumed run does
        a.set_epoch(epoch)
        later = list(a)
    b.set_epoch(2)
    assert list(b) == later and later != first
    assert list(b) == list(b)  # iterating again is the same epoch
    c = BucketBatchSampler(keys, 200, 16, seed=8, pool_batches=3)
    c.set_epoch(2)
    assert list(c) != later


def test_buckets_hold_similar_lengths():
    keys = lengths(800)
    spread = {}
    for bucket in (True, False):
        s = BucketBatchSampler(keys, 800, 16, seed=0, bucket=bucket, pool_batches=10)
        spread[bucket] = sum(max(keys[i] for i in b) - min(keys[i] for i in b) for b in s) / len(s)
    assert spread[True] < 0.3 * spread[False]


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("n", [48, 45])
def test_processes_split_the_global_batch(n, bucket):
    keys, b, world = lengths(n), 4, 3
    single = BucketBatchSampler(keys, n, b * world, seed=1, bucket=bucket, pool_batches=2)
    ranks = [BucketBatchSampler(keys, n, b, seed=1, rank=r, world_size=world, bucket=bucket, pool_batches=2)
             for r in range(world)]
    for epoch in (0, 5):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        per_rank = [list(s) for s in ranks]
        assert len({len(p) for p in per_rank}) == 1  # every process takes as many steps
        seen = []
        for step, global_batch in enumerate(single):
            parts = [p[step] for p in per_rank]
            assert len({len(p) for p in parts}) == 1  # and as many images at each step
            together = [i for p in parts for i in p]
            # The processes' batches at a step are the single process's batch (topped up
            # with a few repeated images when it does not divide, as DistributedSampler does).
            assert not Counter(global_batch) - Counter(together)
            assert sum((Counter(together) - Counter(global_batch)).values()) == len(together) - len(global_batch) < world
            seen += together
        assert set(seen) == set(range(n))
        assert len(seen) - n < world


def test_caption_dataset_sort_keys_are_longest_caption(shapes):
    records, vocab, *_ = shapes
    ds = CaptionDataset(records, vocab, IMAGE_SIZE)
    assert ds.sort_keys() == [max(len(c) for c in caps) for caps in ds.captions]
