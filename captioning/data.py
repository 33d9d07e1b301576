"""Caption datasets: COCO caption files (through pycocotools) and Karpathy's split file.

An item is one image with all of its captions, so a batch of B images carries M >= B
captions and the CNN runs once per image, not once per caption (the popular tutorial
re-encodes each image five times). ``collate_captions`` returns ``image_index`` (M,) telling
the decoder which image each caption belongs to.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from captioning.core.data import ImageGroupDataset, ImageSource, pad_sequences
from captioning.core.errors import UserError
from captioning.core.fileio import read_json
from captioning.core.vocab import Vocabulary


@dataclass
class ImageCaptions:
    image_id: int
    path: Path
    captions: list[str]


def load_coco_captions(annotation_file: str | os.PathLike, image_dir: str | os.PathLike) -> list[ImageCaptions]:
    """COCO captions (``captions_train2014.json`` format), read through pycocotools.
    Images without captions are skipped; order follows the file's ``images`` list."""
    from pycocotools.coco import COCO

    read_json(annotation_file, "COCO captions file")  # a clear error before pycocotools asserts
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            coco = COCO(str(annotation_file))
    except (KeyError, TypeError, AssertionError) as e:
        raise UserError(f"{annotation_file}: not in COCO captions format ({type(e).__name__}: {e})") from None
    records = []
    for img in coco.dataset.get("images", []):
        anns = coco.imgToAnns.get(img["id"], [])
        if anns:
            records.append(ImageCaptions(int(img["id"]), Path(image_dir) / img["file_name"], [a["caption"] for a in anns]))
    if not records:
        raise UserError(f"{annotation_file}: no captioned images")
    return records


def load_karpathy_split(split_file: str | os.PathLike, image_dir: str | os.PathLike, split: str) -> list[ImageCaptions]:
    """Karpathy's ``dataset_coco.json``: ``split`` is train (with restval, as is usual), val or test.
    Image ids are the COCO ids (``cocoid``), so results files score against COCO annotations."""
    data = read_json(split_file, "Karpathy split file")
    wanted = {"train": {"train", "restval"}, "val": {"val"}, "test": {"test"}}.get(split)
    if wanted is None:
        raise UserError(f"unknown Karpathy split {split!r} (train, val or test)")
    try:
        return [ImageCaptions(int(im.get("cocoid", im.get("imgid"))), Path(image_dir) / im.get("filepath", "") / im["filename"],
                              [s["raw"] for s in im["sentences"]])
                for im in data["images"] if im["split"] in wanted]
    except (KeyError, TypeError) as e:
        raise UserError(f"{split_file}: not in Karpathy's dataset_coco.json format (missing {e})") from None


def references(records: Sequence[ImageCaptions]) -> dict[int, list[str]]:
    return {r.image_id: r.captions for r in records}


def load_caption_splits(images: str | os.PathLike, captions: str | None = None, val_captions: str | None = None,
                        val_images: str | None = None, karpathy_split: str | None = None
                        ) -> tuple[list[ImageCaptions], list[ImageCaptions] | None]:
    """(train, val) records as the training scripts take them: Karpathy's split file (train
    with restval, and val), or COCO caption files (val optional)."""
    if karpathy_split:
        return (load_karpathy_split(karpathy_split, images, "train"), load_karpathy_split(karpathy_split, images, "val"))
    if not captions:
        raise UserError("give --captions TRAIN.json (COCO format) or --karpathy-split dataset_coco.json")
    train = load_coco_captions(captions, images)
    val = load_coco_captions(val_captions, val_images or images) if val_captions else None
    return train, val


class CaptionDataset(ImageGroupDataset):
    """Item i: image i as uint8 (3, S, S) and the token ids of all its captions."""

    def __init__(self, records: Sequence[ImageCaptions], vocab: Vocabulary, image_size: int,
                 max_length: int = 50, images: ImageSource | None = None):
        super().__init__(records, image_size, images)
        # Tokenise once, up front: cheap next to image decoding, and workers share the result.
        self.captions = [[vocab.encode(c, max_length) for c in r.captions] for r in self.records]

    def sort_keys(self) -> list[int]:
        """Per image, the longest caption in tokens: the decoder loops that many steps, so the
        bucketing sampler (``captioning.core.sampler``) groups images by it."""
        return [max(map(len, caps), default=0) for caps in self.captions]

    def __getitem__(self, i: int) -> dict:
        return {"image": self.image(i), "captions": self.captions[i],
                "image_id": self.records[i].image_id}


@dataclass
class CaptionBatch:
    images: torch.Tensor  # (B, 3, S, S) uint8
    captions: torch.Tensor  # (M, L) long, <start> w1 .. wn <end>, padded with 0
    lengths: torch.Tensor  # (M,) tokens per caption, <start> and <end> included
    image_index: torch.Tensor  # (M,) which image of the batch each caption describes
    image_ids: list[int]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CaptionBatch:
        return CaptionBatch(*(t.to(device, non_blocking=non_blocking) for t in
                              (self.images, self.captions, self.lengths, self.image_index)), self.image_ids)

    def pin_memory(self) -> CaptionBatch:
        return CaptionBatch(self.images.pin_memory(), self.captions.pin_memory(), self.lengths.pin_memory(),
                            self.image_index.pin_memory(), self.image_ids)


def collate_captions(items: list[dict]) -> CaptionBatch:
    caps = [(i, c) for i, item in enumerate(items) for c in item["captions"]]
    captions, lengths = pad_sequences([c for _, c in caps])
    return CaptionBatch(torch.stack([item["image"] for item in items]), captions, lengths,
                        torch.tensor([i for i, _ in caps], dtype=torch.long), [item["image_id"] for item in items])
