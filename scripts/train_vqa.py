"""Train a VQA model (LSTM question encoder, CNN grid, concat / mul / attention fusion) on VQA v2 files.

    python scripts/train_vqa.py \
        --train-questions v2_OpenEnded_mscoco_train2014_questions.json \
        --train-annotations v2_mscoco_train2014_annotations.json --train-images COCO/train2014 \
        --val-questions v2_OpenEnded_mscoco_val2014_questions.json \
        --val-annotations v2_mscoco_val2014_annotations.json --val-images COCO/val2014 \
        --fusion attention --glimpses 2 --out runs/vqa --trained-on "VQA v2 train2014"
    python scripts/prepare_easy_vqa.py --out data/easy_vqa     # then the same with data/easy_vqa/*_train_*
    torchrun --nproc_per_node=8 scripts/train_vqa.py ...         # one process per GPU

The validation metric, which picks ``best.safetensors``, is the official VQA accuracy on the
validation split (``vqa.metric``, as the official code scores today: its 2021 version).
"""

from __future__ import annotations

import argparse
import sys

from captioning.core.checkpoint import resume_model
from captioning.core.commandline import run
from captioning.core.distributed import cleanup_distributed, is_main_process, setup_distributed
from captioning.core.errors import UserError
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
from vqa.answers import AnswerVocab
from vqa.data import VQADataset, load_vqa
from vqa.fusion import FusionConfig
from vqa.model import VQAConfig, VQANet
from vqa.question_encoder import QuestionEncoderConfig
from vqa.training import VQATask, VQATrainConfig


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--train-questions", required=True, help="the training questions, VQA v2 format "
                   "(v2_OpenEnded_mscoco_train2014_questions.json)")
    d.add_argument("--train-annotations", required=True, help="their annotations, VQA v2 format "
                   "(v2_mscoco_train2014_annotations.json)")
    d.add_argument("--train-images", required=True, help="the training images (COCO's train2014/)")
    d.add_argument("--val-questions", help="validation questions (without: no validation, and no best.safetensors)")
    d.add_argument("--val-annotations", help="validation annotations")
    d.add_argument("--val-images", help="the validation images (COCO's val2014/)")
    d.add_argument("--top-answers", type=int, default=3000, help="answer classes: the K most frequent answers (default 3000)")
    d.add_argument("--min-word-count", type=int, default=1, help="rarer question words become <unk> (default 1)")
    d.add_argument("--trained-on", default=None, help="what the data is, stored in the checkpoint and shown by the CLI")
    add_encoder_args(p)
    add_dataclass_args(p, VQAConfig, skip=("num_answers",), title="answer classifier")
    add_dataclass_args(p, QuestionEncoderConfig, skip=("vocab_size",), title="question encoder")
    add_dataclass_args(p, FusionConfig, title="fusion")
    add_dataclass_args(p, VQATrainConfig, title="training")
    p.add_argument("--out", required=True, help="output folder: last/best checkpoints and log.csv")
    p.add_argument("--resume", help="a last.safetensors (or its folder) to continue from (same optimizer, scheduler "
                   "and RNG state; the flags that shape the model or the data cannot change)")
    return p


# Flags a resumed run cannot change: the model's shape, and the data and batch size its
# exact resume (same batches, same step count) depends on.
RESUME_FIXED = ENCODER_DESTS + ("VQAConfig.", "QuestionEncoderConfig.", "FusionConfig.", "train_questions",
                                "train_annotations", "top_answers", "min_word_count", "VQATrainConfig.batch_size")


def load_splits(args):
    # With --shards the pixels come from the shards: the JPEGs need not be there.
    check = not args.shards
    train = load_vqa(args.train_questions, args.train_annotations, args.train_images, check_images=check)
    val_args = (args.val_questions, args.val_annotations, args.val_images)
    if any(val_args) and not all(val_args):
        raise UserError("validation needs all three of --val-questions, --val-annotations and --val-images")
    return train, load_vqa(*val_args, check_images=check) if all(val_args) else None


def build_vocabularies(args, train, resumed=None) -> tuple[Vocabulary, AnswerVocab]:
    if resumed is not None:  # the classes and word ids of the run being continued
        vocab = resumed.vocab
        return Vocabulary.from_json(vocab["questions"]), AnswerVocab.from_json(vocab["answers"])
    return (Vocabulary.build((q.text for r in train.records for q in r.questions), args.min_word_count),
            AnswerVocab.from_annotations(train.annotations, args.top_answers))


def build_model(args, question_vocab: Vocabulary, answer_vocab: AnswerVocab, resumed=None) -> VQANet:
    if resumed is not None:  # the architecture and weights of the run being continued (as train_caption.py)
        return resume_model(resumed, VQANet, VQAConfig.from_json, bool(args.cache_features))
    cfg = dataclass_from_args(
        VQAConfig, args, num_answers=len(answer_vocab),
        encoder=encoder_config_from_args(args),
        question=dataclass_from_args(QuestionEncoderConfig, args, vocab_size=len(question_vocab)),
        fusion=dataclass_from_args(FusionConfig, args))
    return VQANet(cfg, encoder_weights=args.encoder_weights)


def main(args, command: list[str] | None = None) -> int:
    setup_distributed()
    try:
        return train(args, command if command is not None else sys.argv)
    finally:
        cleanup_distributed()


def train(args, command: list[str]) -> int:
    resumed = read_resumed(args, "vqa")
    command = recorded_command(get_args_parser(), command, resumed, RESUME_FIXED)
    cfg = dataclass_from_args(VQATrainConfig, args)
    train, val = load_splits(args)
    question_vocab, answer_vocab = build_vocabularies(args, train, resumed)
    model = build_model(args, question_vocab, answer_vocab, resumed)
    size, max_len = model.image_size, model.cfg.max_question_length
    device = resolve_device(cfg.device)
    train_set = VQADataset(train.records, question_vocab, size, max_len, answer_vocab,
                           images=open_image_source(model, train.records, "train", args, cfg, device))
    val_set = VQADataset(val.records, question_vocab, size, max_len, answer_vocab,
                         images=open_image_source(model, val.records, "val", args, cfg, device)) if val else None
    task = VQATask(model, question_vocab, answer_vocab, train_set, val_set, val.annotations if val else None, cfg,
                   trained_on=args.trained_on, command=command)
    if is_main_process():  # under torchrun, rank 0 alone reports
        print(f"train: {len(train_set)} images, {train.num_questions} questions; "
              f"val: {len(val_set) if val_set else 0} images, {val.num_questions if val else 0} questions; "
              f"{len(question_vocab)} words, {len(answer_vocab)} answers; {model.cfg.fusion.name} fusion; "
              f"grid {model.grid_shape()} x {model.encoder.out_channels}", file=sys.stderr)
    fit(task, cfg, args.out, resume=resumed)
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("train_vqa", lambda: main(parsed)))
