"""The Python API: ``VQAModel.from_pretrained(path)`` then ``model(image, question)``.

>>> vqa = VQAModel.from_pretrained()            # the shipped default checkpoint
>>> vqa("examples/easy_vqa_test_0.png", "what color is the shape?", top_k=2)  # doctest: +ELLIPSIS
[{'answer': 'red', 'score': 0.98...}, {'answer': 'brown', 'score': 0.01...}]

The output has the shape of the Hugging Face visual-question-answering pipeline's. Scores are
the sigmoid of each answer's logit (the model is trained with binary cross-entropy on soft
targets, see ``vqa.training``), so they need not sum to 1. :meth:`VQAModel.predict` also
returns the attention maps of the ``attention`` fusion. ``answer_dataset`` (a whole dataset
in batches, as training-time validation and ``scripts/evaluate_vqa.py`` use it) and
``answer_scores`` live in ``vqa.evaluation`` and are re-exported here as part of the API.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from captioning.core.checkpoint import CHECKPOINT_DIR, load_model, resolve_checkpoint
from captioning.core.errors import UserError, check_int
from captioning.core.images import ImageInput, PreparedImage, prepare_image
from captioning.core.precision import resolve_precision
from captioning.core.vocab import Vocabulary, tokenize
from vqa.answers import AnswerVocab
from vqa.data import ImageQuestions, VQADataset, question_ids
from vqa.evaluation import answer_dataset, answer_scores
from vqa.model import VQAConfig, VQANet

__all__ = ["ATTENTION_VQA_CHECKPOINT", "DEFAULT_VQA_CHECKPOINT", "QuestionTruncatedWarning", "UnknownChoiceWarning",
           "UnknownWordsWarning", "VQAModel", "VQAPrediction", "answer_dataset", "answer_scores", "load_vqa_model",
           "parse_choices"]

DEFAULT_VQA_CHECKPOINT = CHECKPOINT_DIR / "vqa_easy_vqa.safetensors"
# The shipped model with attention fusion (easy-VQA too): what `vqa --attention-map` needs.
ATTENTION_VQA_CHECKPOINT = CHECKPOINT_DIR / "vqa_easy_vqa_attention.safetensors"

ImageLike = ImageInput  # a path, http(s) URL, PIL image, encoded bytes or (H, W[, C]) array


class QuestionTruncatedWarning(UserWarning):
    """A question longer than the model reads was cut."""


class UnknownChoiceWarning(UserWarning):
    """A multiple-choice candidate is not an answer the model can give."""


class UnknownWordsWarning(UserWarning):
    """Question words the model never saw in training (read as <unk>), or a question with no
    word the model knows at all ("???"): its answer is a guess."""


@dataclass
class VQAPrediction:
    question: str
    answers: list[dict]  # [{"answer": str, "score": float}], best first
    attention: np.ndarray | None  # (G, h, w) glimpses of the attention fusion; None for concat and mul
    unknown_words: list[str]  # question words outside the vocabulary, read as <unk>
    truncated: bool  # the question was longer than the model reads
    # what the answer's reader should know (unknown words, no known word, a cut question,
    # unknown choices): decided once here, issued as Python warnings by the API, printed on
    # stderr by ``vqa`` and shown beside the answer by the explorer and the --html report
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"question": self.question, "answers": self.answers, "unknown_words": self.unknown_words,
                "truncated": self.truncated, "warnings": self.warnings}


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


class VQAModel:
    checkpoint: Path | None = None  # the file it was loaded from (from_pretrained)
    is_default: bool = False  # whether that is the shipped default

    def __init__(self, model: VQANet, question_vocab: Vocabulary, answer_vocab: AnswerVocab, extra: dict | None = None,
                 precision: str = "fp32"):
        """``precision``: fp32, bf16, or auto (bf16 where the device computes it natively)."""
        self.model, self.question_vocab, self.answer_vocab, self.extra = model, question_vocab, answer_vocab, extra or {}
        self.precision = resolve_precision(precision, self.device)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                        precision: str = "fp32") -> VQAModel:
        """``path``: a checkpoint or a training output folder; None loads the shipped default
        (``checkpoints/vqa_easy_vqa.safetensors``)."""
        path, is_default = resolve_checkpoint(path, DEFAULT_VQA_CHECKPOINT)
        vqa = cls(*load_vqa_model(path, device), precision=precision)
        vqa.checkpoint, vqa.is_default = path, is_default
        return vqa

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

    def encode_question(self, question: str) -> tuple[list[int], list[str], bool, list[tuple[type, str]]]:
        """(word ids, unknown words, truncated, warnings as (category, message)). An empty
        question raises :class:`UserError`; one longer than the model reads is cut
        (:class:`QuestionTruncatedWarning`); unknown words, or no word the model knows at all,
        give an :class:`UnknownWordsWarning`. The ids follow the dataset's rule
        (``vqa.data.question_ids``)."""
        if not isinstance(question, str) or not question.strip():
            raise UserError("the question is empty")
        words = tokenize(question)
        limit = self.max_question_length
        truncated = len(words) > limit
        found = []
        if truncated:
            found.append((QuestionTruncatedWarning,
                          f"the question is {len(words)} tokens long; the model reads only the first {limit}"))
        read = words[:limit]
        unknown = [w for w in read if w not in self.question_vocab.index]
        # Punctuation the model knows ("?") is not a word: "???" tells it nothing.
        known = [w for w in read if w in self.question_vocab.index and any(c.isalnum() for c in w)]
        if not known:
            listed = f" ({', '.join(map(repr, dict.fromkeys(read)))})" if read else ""
            found.append((UnknownWordsWarning, f"the question has no words the model knows{listed}: the answer is "
                          "a guess"))
        elif unknown:
            found.append((UnknownWordsWarning,
                          f"words the model does not know, read as <unk>: {', '.join(map(repr, dict.fromkeys(unknown)))}"))
        return question_ids(self.question_vocab, words, limit), unknown, truncated, found

    def predict(self, image: ImageLike, question: str, top_k: int = 5,
                choices: str | Sequence[str] | None = None) -> VQAPrediction:
        """``choices``: a list of candidate answers, or one string of them separated by "|"."""
        check_int("top_k", top_k, 1)
        choices = parse_choices(choices)
        ids, unknown, truncated, found = self.encode_question(question)
        size = self.model.image_size
        if not (isinstance(image, PreparedImage) and image.pixels.shape == (3, size, size)):
            image = prepare_image(image, size)
        images = torch.from_numpy(image.pixels)[None].to(self.device)  # (1, 3, S, S) uint8
        questions = torch.tensor([ids], device=self.device)
        probs, alpha = answer_scores(self.model, images, questions, torch.tensor([len(ids)]), precision=self.precision)
        probs = probs[0].cpu()  # (K,)
        if choices is None:
            answers = self._choose(probs, top_k)
        else:
            answers, unknown_choices = self.answer_vocab.rank_choices(probs, choices)
            answers = answers[:top_k]
            found += [(UnknownChoiceWarning, f"the choice {c!r} is not an answer the model knows; it scores 0")
                      for c in unknown_choices]
        for category, message in found:
            warnings.warn(message, category, stacklevel=2)
        attention = None
        if alpha is not None:
            h, w = self.model.grid_shape()
            attention = alpha[0].float().reshape(-1, h, w).cpu().numpy()  # (G, h, w)
        return VQAPrediction(question, answers, attention, unknown, truncated, [m for _, m in found])

    def _choose(self, probs: torch.Tensor, top_k: int) -> list[dict]:
        scores, index = probs.topk(min(top_k, probs.numel()))
        return [{"answer": self.answer_vocab.decode(i), "score": float(s)} for s, i in zip(scores, index)]

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
