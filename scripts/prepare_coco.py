"""Decode and resize COCO images once into uint8 shards, so training reads no JPEGs.

    python scripts/prepare_coco.py --images train2014/ --captions captions_train2014.json \
        --val-images val2014/ --val-captions captions_val2014.json --out shards/ --size 256
    python scripts/prepare_coco.py --karpathy-split dataset_coco.json --images COCO_ROOT --out shards/ --size 256
    python scripts/train_caption.py ... --shards shards/ --image-size 256
    python scripts/prepare_coco.py --vqa-questions train_questions.json --images IMAGES \
        --val-vqa-questions val_questions.json --val-images VAL_IMAGES --out shards/ --size 224

Writes SHARDS/train/ and SHARDS/val/ (see captioning/shards.py). Training finds each image by
its id, so the shards of COCO's caption files serve VQA v2 as well (same images); a VQA-only
dataset (easy-VQA) is sharded from its questions files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from captioning.core.commandline import positive_int, run
from captioning.core.errors import UserError
from captioning.core.shards import write_shards
from captioning.data import load_caption_splits


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="image folder (with --karpathy-split: the COCO root holding train2014/ and val2014/)")
    p.add_argument("--captions", help="training captions, COCO format")
    p.add_argument("--val-captions", help="validation captions, COCO format")
    p.add_argument("--val-images", help="image folder of the validation captions (default: --images)")
    p.add_argument("--karpathy-split", help="Karpathy's dataset_coco.json: its train (+restval) and val splits")
    p.add_argument("--vqa-questions", help="instead of captions: a VQA questions file, its images in --images")
    p.add_argument("--val-vqa-questions", help="validation VQA questions file, its images in --val-images (or --images)")
    p.add_argument("--out", required=True, help="shard folder; train/ and val/ are written inside")
    p.add_argument("--size", type=positive_int, default=256, help="square side in pixels (default 256): the model's --image-size")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: one per CPU core)")
    p.add_argument("--shard-images", type=positive_int, default=4096, help="images per shard file (default 4096)")
    return p


def load_records(args):
    """(train, val) records: anything with ``image_id`` and ``path``."""
    if args.vqa_questions or args.val_vqa_questions:
        from vqa.data import load_vqa

        if args.captions or args.val_captions or args.karpathy_split:
            raise UserError("give caption files or VQA questions files, not both")
        if not args.vqa_questions:
            raise UserError("--val-vqa-questions needs --vqa-questions for the training split")
        train = load_vqa(args.vqa_questions, None, args.images).records
        val = load_vqa(args.val_vqa_questions, None, args.val_images or args.images).records if args.val_vqa_questions else None
        return train, val
    return load_caption_splits(args.images, args.captions, args.val_captions, args.val_images, args.karpathy_split)


def main(args) -> int:
    train, val = load_records(args)
    for split, records in (("train", train), ("val", val)):
        if not records:
            continue
        t0 = time.time()
        out = write_shards(records, Path(args.out) / split, args.size, args.workers, args.shard_images,
                           progress=sys.stderr.isatty())
        seconds = time.time() - t0
        print(f"{split}: {len(records)} images -> {out} ({len(records) / max(seconds, 1e-9):.0f} images/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("prepare_coco", lambda: main(parsed)))
