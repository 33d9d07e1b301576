"""Train the soft-attention captioner on COCO-format captions or Karpathy's split.

    python scripts/train_caption.py --images DIR --captions captions_train2014.json \
        --val-captions captions_val2014.json --out runs/coco
    python scripts/train_caption.py --karpathy-split dataset_coco.json --images COCO_ROOT --out runs/coco
    torchrun --nproc_per_node=8 scripts/train_caption.py ...      # one process per GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from captioning.core.checkpoint import load_weights, read_checkpoint, resume_model
from captioning.core.commandline import run
from captioning.core.distributed import cleanup_distributed, is_main_process, setup_distributed
from captioning.core.feature_cache import open_image_source
from captioning.core.flags import (
    ENCODER_DESTS,
    add_dataclass_args,
    add_encoder_args,
    dataclass_from_args,
    encoder_config_from_args,
    read_resumed,
    recorded_command,
)
from captioning.core.trainer import fit, resolve_device
from captioning.core.vocab import Vocabulary
from captioning.data import CaptionDataset, load_caption_splits, references
from captioning.decoder import DecoderConfig
from captioning.model import CaptionConfig, CaptionModel
from captioning.training import CaptionTask, CaptionTrainConfig, check_supervision


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--images", required=True, help="image folder (with --karpathy-split: the COCO root holding train2014/ and val2014/)")
    d.add_argument("--captions", help="training captions, COCO format")
    d.add_argument("--val-captions", help="validation captions, COCO format")
    d.add_argument("--val-images", help="image folder of the validation captions (default: --images)")
    d.add_argument("--karpathy-split", help="Karpathy's dataset_coco.json (instead of --captions/--val-captions)")
    d.add_argument("--min-word-count", type=int, default=5, help="rarer words become <unk> (default 5)")
    d.add_argument("--trained-on", default=None, help="what the data is, stored in the checkpoint and shown by the CLI")
    d.add_argument("--instances", help="COCO instances (boxes) of the training images, for --attention-supervision")
    add_encoder_args(p)
    add_dataclass_args(p, DecoderConfig, skip=("vocab_size", "feature_dim"), title="decoder")
    add_dataclass_args(p, CaptionTrainConfig, title="training")
    p.add_argument("--out", required=True, help="output folder: last/best checkpoints and log.csv")
    p.add_argument("--resume", help="a last.safetensors (or its folder) to continue from (same optimizer, scheduler "
                   "and RNG state; the flags that shape the model or the data cannot change)")
    p.add_argument("--init-from", metavar="CKPT", help="start from this caption checkpoint's weights, decoder and "
                   "vocabulary with a fresh optimizer (e.g. to fine-tune the CNN of a model trained with it frozen)")
    return p


# Flags a resumed run cannot change: the model's shape, and the data and batch size its
# exact resume (same batches, same step count) depends on.
RESUME_FIXED = ENCODER_DESTS + ("DecoderConfig.", "captions", "karpathy_split", "min_word_count",
                                "CaptionTrainConfig.batch_size")


def given(args, dest: str) -> bool:
    """Whether the command line asks for another value of ``dest`` than its default."""
    return getattr(args, dest) != get_args_parser().get_default(dest)


def load_splits(args):
    return load_caption_splits(args.images, args.captions, args.val_captions, args.val_images, args.karpathy_split)


def build_model(args, vocab: Vocabulary, resumed=None, init=None) -> CaptionModel:
    """The model to train: ``resumed``'s (the checkpoint --resume read), one started from
    ``init``'s weights (the checkpoint --init-from read), or a new one."""
    if resumed is not None:  # the architecture, vocabulary and weights of the run being continued
        return resume_model(resumed, CaptionModel, CaptionConfig.from_json, bool(args.cache_features))
    enc = encoder_config_from_args(args)
    if init is not None:
        init_cfg = CaptionConfig.from_json(init.config)
        dec, stored = init_cfg.decoder, init_cfg.encoder.fine_tune_blocks
        # Soft and hard attention share every weight: --attention/--hard-decode may switch them
        # (e.g. hard attention started from a soft model); the rest of the decoder is the checkpoint's.
        for name in ("attention", "hard_decode"):
            if given(args, f"DecoderConfig.{name}"):
                dec = dataclasses.replace(dec, **{name: getattr(args, f"DecoderConfig.{name}")})
        if not enc.in_checkpoint and init_cfg.encoder.name == enc.name and stored > enc.fine_tune_blocks:
            # Its CNN's last blocks were fine-tuned: the new checkpoints must keep storing them
            # (fine_tune_blocks decides what a checkpoint stores), while only the asked-for
            # blocks train (e.g. none, to train from cached features of the fine-tuned CNN).
            enc = dataclasses.replace(enc, fine_tune_blocks=stored)
        model = CaptionModel(CaptionConfig(enc, dec), encoder_weights=args.encoder_weights)
        model.encoder.fine_tune(args.fine_tune_encoder)
        # Strict for every tensor the checkpoint has; what it lacks (a CNN it left to the
        # registry) keeps the weights just built.
        return load_weights(model, init, skip=tuple(k for k in model.state_dict() if k not in init.state_dict))
    dec = dataclass_from_args(DecoderConfig, args, vocab_size=len(vocab))
    return CaptionModel(CaptionConfig(enc, dec), encoder_weights=args.encoder_weights)


def main(args) -> int:
    setup_distributed()
    try:
        return train(args)
    finally:
        cleanup_distributed()


def train(args) -> int:
    resumed = read_resumed(args, "caption")
    command = recorded_command(get_args_parser(), sys.argv, resumed, RESUME_FIXED)
    cfg = dataclass_from_args(CaptionTrainConfig, args)
    check_supervision(cfg, bool(args.instances))  # before any data is read or cached
    train_records, val_records = load_splits(args)
    init = read_checkpoint(args.init_from, "caption") if args.init_from and resumed is None else None
    if resumed is not None or init is not None:
        vocab = Vocabulary.from_json((resumed or init).vocab)
    else:
        vocab = Vocabulary.build((c for r in train_records for c in r.captions), args.min_word_count)
    model = build_model(args, vocab, resumed, init)
    train_set = make_dataset(args, model, vocab, cfg, train_records, "train")
    val_set = make_dataset(args, model, vocab, cfg, val_records, "val") if val_records else None
    targets = None
    if args.instances:  # the boxes that teach the object words' attention (CaptionTrainConfig.attention_supervision)
        from captioning.core.grounding import AttentionTargets, load_instances

        targets = AttentionTargets(load_instances(args.instances), vocab.words, model.grid_shape(),
                                   cfg.attention_target_power)
    task = CaptionTask(model, vocab, train_set, val_set, references(val_records or []), cfg,
                       trained_on=args.trained_on, command=command, attention_targets=targets)
    if is_main_process():
        print(f"train: {len(train_set)} images, {sum(len(c) for c in train_set.captions)} captions; "
              f"val: {len(val_set) if val_set else 0} images; vocabulary {len(vocab)} words; "
              f"grid {model.grid_shape()} x {model.encoder.out_channels}", file=sys.stderr)
    fit(task, cfg, args.out, resume=resumed)
    return 0


def make_dataset(args, model: CaptionModel, vocab: Vocabulary, cfg: CaptionTrainConfig, records, split: str) -> CaptionDataset:
    images = open_image_source(model, records, split, args, cfg, resolve_device(cfg.device))
    return CaptionDataset(records, vocab, model.image_size, cfg.max_caption_length, images=images)


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("train_caption", lambda: main(parsed)))
