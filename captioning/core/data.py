"""Image sources and the dataset of images with their texts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from captioning.core.errors import UserError
from captioning.core.images import read_image
from captioning.core.transforms import resize_uint8


class ImageSource(Protocol):
    """Something that gives image ``i`` as uint8 (3, S, S): files decoded on the fly, or
    pre-decoded shards (``captioning.core.shards``). A source that knows its ``image_ids`` (shards
    do) is checked against the records it is paired with."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


class ImageFiles:
    def __init__(self, paths: Sequence[Path], size: int):
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return resize_uint8(read_image(self.paths[i]), self.size)


class ImageGroupDataset(Dataset):
    """Item i is image i with every text about it (its captions, or its questions), so one
    CNN pass serves them all. Holds what captioning and VQA datasets share: the records, the
    image source (files, shards or cached features) checked against them, and the epoch."""

    def __init__(self, records: Sequence, image_size: int, images: ImageSource | None = None):
        self.records = list(records)
        self.images = images if images is not None else ImageFiles([r.path for r in self.records], image_size)
        check_image_source(self.images, self.records, image_size)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Passed on to an image source that varies by epoch (cached augmented views)."""
        if hasattr(self.images, "set_epoch"):
            self.images.set_epoch(epoch)

    def image(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.images[i]))


def check_image_source(images: ImageSource, records: Sequence, image_size: int) -> None:
    """Shards are read by position: shard i must be record i, or every caption would describe
    another image without any error."""
    ids = getattr(images, "image_ids", None)
    where = getattr(images, "dir", "the image source")
    if ids is not None:
        if len(ids) != len(records):
            raise UserError(f"{where}: {len(ids)} images but {len(records)} records "
                            "(shards prepared from other captions? rerun scripts/prepare_coco.py)")
        for i, (a, r) in enumerate(zip(ids, records)):
            if a != r.image_id:
                raise UserError(f"{where}: image {i} is id {a} but the annotations say id {r.image_id} "
                                "(shards prepared from other captions? rerun scripts/prepare_coco.py)")
    size = getattr(images, "size", None)
    if isinstance(size, int) and size != image_size:
        raise UserError(f"{where}: images are {size} px but the model takes {image_size} px "
                        f"(prepare the shards with --size {image_size}, or train with --image-size {size})")


def pad_sequences(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-id lists (captions or questions) -> ids (M, L) long, padded with 0 (every
    vocabulary's ``<pad>``), and lengths (M,)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s)
    return ids, lengths


def inference_batches(dataset: Dataset, collate, batch_size: int, limit: int | None = None,
                      num_workers: int = 0) -> DataLoader:
    """The batches of a whole-dataset pass in order (captioning or answering a split), over
    the first ``limit`` images only when given."""
    if limit:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
