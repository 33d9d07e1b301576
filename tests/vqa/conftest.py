"""VQA fixtures: the shapes in VQA v2 files (both image-naming schemes) and a tiny model trained on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from captioning.core.encoders import EncoderConfig
from captioning.core.trainer import fit
from captioning.core.vocab import Vocabulary
from vqa.answers import AnswerVocab
from vqa.data import VQADataset, VQASplit, load_vqa
from vqa.fusion import FusionConfig
from vqa.model import VQAConfig, VQANet
from vqa.question_encoder import QuestionEncoderConfig
from vqa.training import VQATask, VQATrainConfig

from ..shapes import make_vqa_dataset

IMAGE_SIZE = 64  # efficientnet_lite0 at 64 px: a 2 x 2 grid, enough to tell left from right
MAX_WORDS = 8  # the tiny model's question limit; the shapes questions have 5-7 tokens


def tiny_vqa_config(num_words: int, num_answers: int, fusion: str = "attention", **kw) -> VQAConfig:
    question = QuestionEncoderConfig(num_words, word_dim=16, rnn_dim=32, **kw.pop("question", {}))
    base = dict(num_answers=num_answers, max_question_length=MAX_WORDS, classifier_dim=64, dropout=0.0)
    base.update(kw)
    return VQAConfig(EncoderConfig("efficientnet_lite0", IMAGE_SIZE), question,
                     FusionConfig(fusion, fusion_dim=64, attention_dim=32, glimpses=2), **base)


def tiny_train_config(**kw) -> VQATrainConfig:
    """fp32 unless asked (amp=True), as for captioning (tests/conftest.py)."""
    base = dict(epochs=1, batch_size=6, lr=1e-2, num_workers=0, progress=False, device="cpu", amp=False)
    base.update(kw)
    return VQATrainConfig(**base)


@dataclass
class ShapesVQA:
    train: VQASplit  # images named by the questions file's "images" list
    val: VQASplit  # images named by the COCO pattern
    words: Vocabulary
    answers: AnswerVocab
    files: dict  # {"train"|"val": (questions, annotations, image folder)}

    def dataset(self, split: VQASplit, with_targets: bool = True) -> VQADataset:
        return VQADataset(split.records, self.words, IMAGE_SIZE, MAX_WORDS, self.answers if with_targets else None)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tiny models gain little from a second thread and lose much when other work shares
    the cores. Session-scoped, so that it is in force before the session-scoped training."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes_vqa(one_thread, tmp_path_factory) -> ShapesVQA:
    root = tmp_path_factory.mktemp("shapes_vqa")
    files = {"train": make_vqa_dataset(root, n_images=18, seed=0, split="train", naming="images", size=IMAGE_SIZE),
             "val": make_vqa_dataset(root, n_images=18, seed=1, split="val", naming="coco", size=IMAGE_SIZE)}
    train, val = load_vqa(*files["train"]), load_vqa(*files["val"])
    words = Vocabulary.build(q.text for r in train.records for q in r.questions)
    return ShapesVQA(train, val, words, AnswerVocab.from_annotations(train.annotations), files)


@dataclass
class TrainedVQA:
    checkpoint: Path
    history: list[dict]
    model: VQANet


@pytest.fixture(scope="session")
def trained_vqa(shapes_vqa, tmp_path_factory) -> TrainedVQA:
    """A tiny attention-fusion model trained with fit() on the shapes until it answers most of them
    (with ``amp`` on, as users train: bf16 where the hardware has it)."""
    data = shapes_vqa
    torch.manual_seed(0)
    model = VQANet(tiny_vqa_config(len(data.words), len(data.answers)))
    cfg = tiny_train_config(epochs=16, amp=True)
    task = VQATask(model, data.words, data.answers, data.dataset(data.train), data.dataset(data.val),
                   data.val.annotations, cfg, trained_on="test shapes")
    out = tmp_path_factory.mktemp("vqa_run")
    state = fit(task, cfg, out)
    return TrainedVQA(out / "best.safetensors", state.history, model)
