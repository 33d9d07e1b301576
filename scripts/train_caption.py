"""Train the soft-attention captioner on COCO-format captions or Karpathy's split.

    python scripts/train_caption.py --images DIR --captions captions_train2014.json \
        --val-captions captions_val2014.json --out runs/coco
    python scripts/train_caption.py --karpathy-split dataset_coco.json --images COCO_ROOT --out runs/coco
    torchrun --nproc_per_node=8 scripts/train_caption.py ...      # one process per GPU
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from captioning.checkpoint import read_checkpoint
from captioning.cli import run
from captioning.config import add_dataclass_args, dataclass_from_args
from captioning.data import CaptionDataset, load_coco_captions, load_karpathy_split, references
from captioning.decoder import DecoderConfig
from captioning.distributed import setup_distributed
from captioning.errors import UserError
from captioning.model import CaptionConfig, CaptionModel, EncoderConfig
from captioning.training import CaptionTask, CaptionTrainConfig, fit
from captioning.vocab import Vocabulary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--images", required=True, help="image folder (with --karpathy-split: the COCO root holding train2014/ and val2014/)")
    d.add_argument("--captions", help="training captions, COCO format")
    d.add_argument("--val-captions", help="validation captions, COCO format")
    d.add_argument("--val-images", help="image folder of the validation captions (default: --images)")
    d.add_argument("--karpathy-split", help="Karpathy's dataset_coco.json (instead of --captions/--val-captions)")
    d.add_argument("--shards", help="pre-decoded image shards from scripts/prepare_coco.py (skips JPEG decoding)")
    d.add_argument("--cache-features", metavar="DIR", help="with a frozen encoder: encode every image once into DIR (fp16) and train the decoder from there")
    d.add_argument("--cache-views", type=int, default=1, help="cached views per training image: 1 clean + N-1 augmented with --augment (default 1)")
    d.add_argument("--min-word-count", type=int, default=5, help="rarer words become <unk> (default 5)")
    d.add_argument("--trained-on", default=None, help="what the data is, stored in the checkpoint and shown by the CLI")
    m = p.add_argument_group("model")
    m.add_argument("--encoder", default="efficientnet_lite0", help="efficientnet_lite0, resnet50, resnet101, resnet152")
    m.add_argument("--encoder-weights", default="default", help="'default' (pretrained), 'none', or a state-dict file")
    m.add_argument("--image-size", type=int, default=None, help="input side in pixels (default: the encoder's)")
    m.add_argument("--grid-size", type=int, default=None, help="pool the CNN grid to N x N (default: native)")
    m.add_argument("--fine-tune-encoder", type=int, default=0, metavar="N", help="train the CNN's last N blocks (default 0: frozen)")
    add_dataclass_args(p, DecoderConfig, skip=("vocab_size", "feature_dim"), title="decoder")
    add_dataclass_args(p, CaptionTrainConfig, title="training")
    p.add_argument("--out", required=True, help="output folder: last/best checkpoints and log.csv")
    p.add_argument("--resume", help="a last.safetensors to continue from (same optimizer, scheduler and RNG state)")
    return p


def load_splits(args):
    if args.karpathy_split:
        return (load_karpathy_split(args.karpathy_split, args.images, "train"),
                load_karpathy_split(args.karpathy_split, args.images, "val"))
    if not args.captions:
        raise UserError("give --captions TRAIN.json (COCO format) or --karpathy-split dataset_coco.json")
    train = load_coco_captions(args.captions, args.images)
    val = load_coco_captions(args.val_captions, args.val_images or args.images) if args.val_captions else None
    return train, val


def build_model(args, vocab: Vocabulary) -> CaptionModel:
    if args.resume:  # the architecture and vocabulary come from the run being continued
        cfg = CaptionConfig.from_json(read_checkpoint(args.resume, "caption").config)
        return CaptionModel(cfg, encoder_weights="default" if cfg.checkpoint_skips() else "none")
    # A frozen encoder at its registry weights need not be stored in every checkpoint.
    in_checkpoint = bool(args.fine_tune_encoder) or args.encoder_weights != "default"
    enc = EncoderConfig(args.encoder, args.image_size, args.grid_size, args.fine_tune_encoder, in_checkpoint)
    dec = dataclass_from_args(DecoderConfig, args, vocab_size=len(vocab))
    return CaptionModel(CaptionConfig(enc, dec), encoder_weights=args.encoder_weights)


def main(args) -> int:
    setup_distributed()
    cfg = dataclass_from_args(CaptionTrainConfig, args)
    train_records, val_records = load_splits(args)
    if args.resume:
        vocab = Vocabulary.from_json(read_checkpoint(args.resume, "caption").vocab)
    else:
        vocab = Vocabulary.build((c for r in train_records for c in r.captions), args.min_word_count)
    model = build_model(args, vocab)
    train_set = make_dataset(args, model, vocab, cfg, train_records, "train")
    val_set = make_dataset(args, model, vocab, cfg, val_records, "val") if val_records else None
    task = CaptionTask(model, vocab, train_set, val_set, references(val_records or []), cfg,
                       trained_on=args.trained_on, command=sys.argv)
    print(f"train: {len(train_set)} images, {sum(len(c) for c in train_set.captions)} captions; "
          f"val: {len(val_set) if val_set else 0} images; vocabulary {len(vocab)} words; "
          f"grid {model.grid_shape()} x {model.encoder.out_channels}", file=sys.stderr)
    fit(task, cfg, args.out, resume=args.resume)
    return 0


def make_dataset(args, model: CaptionModel, vocab: Vocabulary, cfg: CaptionTrainConfig, records, split: str) -> CaptionDataset:
    """Pixels from image files or shards; with --cache-features, the frozen encoder's grids instead."""
    size = model.image_size
    images = None
    if args.shards:
        from captioning.shards import ShardedImages

        images = ShardedImages(Path(args.shards) / split)
    if args.cache_features:
        if model.cfg.encoder.fine_tune_blocks:
            raise UserError("--cache-features needs a frozen encoder (drop --fine-tune-encoder)")
        from captioning.data import ImageFiles
        from captioning.features import cached_source
        from captioning.training import resolve_device

        train = split == "train"
        describe = {"files": [str(r.path) for r in records], "encoder": asdict(model.cfg.encoder), "size": size,
                    "weights": args.encoder_weights}
        images = cached_source(model.encoder, images or ImageFiles([r.path for r in records], size), args.cache_features,
                               split, describe, views=args.cache_views if train else 1,
                               augment_strength=cfg.augment if train else 0.0, device=resolve_device(cfg.device), train=train)
    return CaptionDataset(records, vocab, size, cfg.max_caption_length, images=images)


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("train_caption", lambda: main(parsed)))
