"""The Python API: ``VQAModel.from_pretrained(path)`` then ``model(image, question)``.

>>> vqa = VQAModel.from_pretrained()            # the shipped default checkpoint
>>> vqa("examples/shape.png", "what color is the shape?", top_k=3)
[{'answer': 'red', 'score': 0.98}, {'answer': 'blue', 'score': 0.01}, ...]

The output has the shape of the Hugging Face visual-question-answering pipeline's. Scores are
the sigmoid of each answer's logit (the model is trained with binary cross-entropy on soft
targets, see ``vqa.training``), so they need not sum to 1. :meth:`VQAModel.predict` also
returns the attention maps of the ``attention`` fusion. ``answer_dataset`` answers a whole
dataset in batches; training-time validation and ``scripts/evaluate_vqa.py`` both use it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from captioning.core.checkpoint import CHECKPOINT_DIR, load_model, resolve_checkpoint
from captioning.core.data import inference_batches
from captioning.core.errors import UserError, check_int
from captioning.core.precision import autocast, resolve_precision
from captioning.core.images import ImageInput, PreparedImage, prepare_image
from captioning.core.vocab import Vocabulary, tokenize

from vqa.answers import AnswerVocab
from vqa.data import ImageQuestions, VQADataset, collate_vqa, encode_question
from vqa.model import VQAConfig, VQANet

DEFAULT_VQA_CHECKPOINT = CHECKPOINT_DIR / "vqa_easy_vqa.safetensors"
# The shipped model with attention fusion (easy-VQA too): what `vqa --attention-map` needs.
ATTENTION_VQA_CHECKPOINT = CHECKPOINT_DIR / "vqa_easy_vqa_attention.safetensors"

ImageLike = ImageInput  # a path, http(s) URL, PIL image, encoded bytes or (H, W[, C]) array


class QuestionTruncatedWarning(UserWarning):
    """A question longer than the model reads was cut."""


class UnknownChoiceWarning(UserWarning):
    """A multiple-choice candidate is not an answer the model can give."""


class UnknownWordsWarning(UserWarning):
    """Question words the model never saw in training (read as <unk>): its answer is a guess."""


@dataclass
class VQAPrediction:
    question: str
    answers: list[dict]  # [{"answer": str, "score": float}], best first
    attention: np.ndarray | None  # (G, h, w) glimpses of the attention fusion; None for concat and mul
    unknown_words: list[str]  # question words outside the vocabulary, read as <unk>
    truncated: bool  # the question was longer than the model reads

    def to_json(self) -> dict:
        return {"question": self.question, "answers": self.answers, "unknown_words": self.unknown_words,
                "truncated": self.truncated}


def load_vqa_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[VQANet, Vocabulary, AnswerVocab, dict]:
    """(model, question vocabulary, answer vocabulary, the checkpoint's ``extra``) from a VQA checkpoint."""
    model, (question_vocab, answer_vocab), extra = load_model(path, "vqa", VQANet, _parse_vqa_checkpoint, device)
    return model, question_vocab, answer_vocab, extra


def _parse_vqa_checkpoint(ckpt) -> tuple[VQAConfig, tuple[Vocabulary, AnswerVocab]]:
    cfg = VQAConfig.from_json(ckpt.config)
    question_vocab = Vocabulary.from_json(ckpt.vocab["questions"])
    answer_vocab = AnswerVocab.from_json(ckpt.vocab["answers"])
    if len(answer_vocab) != cfg.num_answers:
        raise ValueError(f"{len(answer_vocab)} answers in the vocabulary, {cfg.num_answers} in the config")
    return cfg, (question_vocab, answer_vocab)


@torch.no_grad()
def answer_scores(model: VQANet, images: torch.Tensor, questions: torch.Tensor, lengths: torch.Tensor,
                  image_index: torch.Tensor | None = None, precision: str = "fp32"):
    """Answer probabilities (M, K) (sigmoids of the logits) and the attention (M, G, P) or None.
    ``precision``: fp32, bf16 or auto (``captioning.core.precision``)."""
    with autocast(images.device, precision):
        logits, alpha = model(images, questions, lengths, image_index)
    return torch.sigmoid(logits.float()), alpha


class VQAModel:
    def __init__(self, model: VQANet, question_vocab: Vocabulary, answer_vocab: AnswerVocab, extra: dict | None = None,
                 precision: str = "fp32"):
        """``precision``: fp32, bf16, or auto (bf16 where the device computes it natively)."""
        self.model, self.question_vocab, self.answer_vocab, self.extra = model, question_vocab, answer_vocab, extra or {}
        self.precision = resolve_precision(precision, self.device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        precision: str = "fp32") -> "VQAModel":
        """``path`` None loads the shipped default (``checkpoints/vqa_easy_vqa.safetensors``)."""
        path, _ = resolve_checkpoint(path, DEFAULT_VQA_CHECKPOINT)
        return cls(*load_vqa_model(path, device), precision=precision)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_question_length(self) -> int:
        return self.model.cfg.max_question_length

    def __call__(self, image: ImageLike, question: str, top_k: int = 5, choices: Sequence[str] | None = None) -> list[dict]:
        """The ``top_k`` best answers, ``[{"answer": str, "score": float}, ...]``, best first.
        ``choices`` restricts the answers to those candidates (multiple choice)."""
        return self.predict(image, question, top_k, choices).answers

    def encode_question(self, question: str) -> tuple[list[int], list[str], bool]:
        """(word ids, unknown words, truncated). An empty question raises :class:`UserError`;
        one longer than the model reads warns (:class:`QuestionTruncatedWarning`) and is cut."""
        if not isinstance(question, str) or not question.strip():
            raise UserError("the question is empty")
        words = tokenize(question)
        limit = self.max_question_length
        truncated = len(words) > limit
        if truncated:
            warnings.warn(f"the question is {len(words)} tokens long; the model reads only the first {limit}",
                          QuestionTruncatedWarning, stacklevel=3)
        unknown = [w for w in words[:limit] if w not in self.question_vocab.index]
        if unknown:
            listed = ", ".join(map(repr, dict.fromkeys(unknown)))
            if len(unknown) == len(words[:limit]):
                message = f"none of the question's words are in the model's vocabulary ({listed}): the answer is a guess"
            else:
                message = f"words the model does not know, read as <unk>: {listed}"
            warnings.warn(message, UnknownWordsWarning, stacklevel=3)
        return encode_question(self.question_vocab, question, limit), unknown, truncated

    def predict(self, image: ImageLike, question: str, top_k: int = 5,
                choices: str | Sequence[str] | None = None) -> VQAPrediction:
        """``choices``: a list of candidate answers, or one string of them separated by "|"."""
        check_int("top_k", top_k, 1)
        choices = parse_choices(choices)
        ids, unknown, truncated = self.encode_question(question)
        size = self.model.image_size
        if not (isinstance(image, PreparedImage) and image.pixels.shape == (3, size, size)):
            image = prepare_image(image, size)
        images = torch.from_numpy(image.pixels)[None].to(self.device)  # (1, 3, S, S) uint8
        questions = torch.tensor([ids], device=self.device)
        probs, alpha = answer_scores(self.model, images, questions, torch.tensor([len(ids)]), precision=self.precision)
        probs = probs[0].cpu()  # (K,)
        answers = self._choose(probs, top_k) if choices is None else self._choose_among(probs, top_k, choices)
        attention = None
        if alpha is not None:
            h, w = self.model.grid_shape()
            attention = alpha[0].float().reshape(-1, h, w).cpu().numpy()  # (G, h, w)
        return VQAPrediction(question, answers, attention, unknown, truncated)

    def _choose(self, probs: torch.Tensor, top_k: int) -> list[dict]:
        scores, index = probs.topk(min(top_k, probs.numel()))
        return [{"answer": self.answer_vocab.decode(i), "score": float(s)} for s, i in zip(scores, index)]

    def _choose_among(self, probs: torch.Tensor, top_k: int, choices: Sequence[str]) -> list[dict]:
        ranked, unknown = self.answer_vocab.rank_choices(probs, choices)
        for choice in unknown:
            warnings.warn(f"the choice {choice!r} is not an answer the model knows; it scores 0",
                          UnknownChoiceWarning, stacklevel=4)
        return ranked[:top_k]

    def dataset(self, records: Sequence[ImageQuestions]) -> VQADataset:
        """A dataset of ``records`` (``vqa.data.load_vqa(...).records``) as this model reads them."""
        return VQADataset(records, self.question_vocab, self.model.image_size, self.max_question_length)


def parse_choices(choices: str | Sequence[str] | None) -> list[str] | None:
    """Multiple-choice candidates: a list, or one string "a|b|c" (as ``--choices`` takes them),
    never a string split into its letters."""
    if choices is None:
        return None
    if isinstance(choices, str):
        choices = choices.split("|")
    elif not isinstance(choices, Sequence) or not all(isinstance(c, str) for c in choices):
        raise UserError(f"choices must be a list of answers or a string \"a|b|c\", got {choices!r}")
    return list(choices)  # blanks and repeats: AnswerVocab.rank_choices, the one multiple-choice rule


def answer_dataset(model: VQANet, answer_vocab: AnswerVocab, dataset: VQADataset, batch_size: int = 64,
                   device: torch.device | str = "cpu", limit: int | None = None, num_workers: int = 0,
                   precision: str = "fp32", attention: dict[int, np.ndarray] | None = None) -> list[dict]:
    """Answer every question of ``dataset`` (the first ``limit`` images only, if given) ->
    the official results list ``[{"question_id", "answer"}]``, in dataset order. Given a dict
    as ``attention``, an attention-fusion model also fills it with {question_id: (G, h, w)}."""
    model.eval()
    results = []
    h, w = model.grid_shape()
    for batch in inference_batches(dataset, collate_vqa, batch_size, limit, num_workers):
        batch = batch.to(device)
        probs, alpha = answer_scores(model, batch.images, batch.questions, batch.lengths, batch.image_index, precision)
        if attention is not None and alpha is not None:
            maps = alpha.float().reshape(len(batch.question_ids), -1, h, w).cpu().numpy()  # (M, G, h, w)
            attention.update(zip(batch.question_ids, maps))
        best = probs.argmax(dim=1).tolist()
        results.extend({"question_id": qid, "answer": answer_vocab.decode(i)} for qid, i in zip(batch.question_ids, best))
    return results
