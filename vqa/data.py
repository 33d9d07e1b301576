"""VQA v2 data: the official question and annotation files with a folder of COCO images.

Goyal et al. 2017 (VQA v2), in the format of Antol et al. 2015 ("VQA"): a questions file
``v2_OpenEnded_mscoco_{split}_questions.json`` (``{"data_subtype", "questions": [{"image_id",
"question", "question_id"}]}``) and an annotations file ``v2_mscoco_{split}_annotations.json``
(``{"annotations": [{"question_id", "answers": [10 x {"answer"}], "multiple_choice_answer",
"question_type", "answer_type"}]}``). Images are found by the COCO naming pattern
``COCO_{data_subtype}_{image_id:012d}.jpg`` or, when the questions file carries an ``images``
list ``[{"id", "file_name"}]`` (``vqa.datasets.easy_vqa`` writes one), by that list.

As in ``captioning.data``, an item is one image with all of its questions, so the CNN runs
once per image; ``collate_vqa`` returns ``image_index`` (M,) telling the model which image
each of the M questions asks about. Training targets are the soft VQA scores of the ten
human answers (:meth:`vqa.answers.AnswerVocab.soft_target`), made per item in the loader's
workers rather than held for every question up front.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from captioning.core.data import ImageGroupDataset, ImageSource, pad_sequences
from captioning.core.errors import UserError
from captioning.core.fileio import read_json
from captioning.core.vocab import Vocabulary, tokenize
from vqa.answers import AnswerVocab


@dataclass
class Question:
    question_id: int
    text: str
    answers: list[str] = field(default_factory=list)  # the human answers; empty without annotations


@dataclass
class ImageQuestions:
    image_id: int
    path: Path
    questions: list[Question]


@dataclass
class VQASplit:
    """One split as read: the records the model sees and the raw lists the metric scores."""

    records: list[ImageQuestions]
    questions: list[dict]  # the questions file's "questions" list
    annotations: list[dict] | None  # the annotation file's "annotations" list; None without one
    data_subtype: str | None = None

    @property
    def num_questions(self) -> int:
        return sum(len(r.questions) for r in self.records)

    def restricted_to(self, records: list[ImageQuestions]) -> VQASplit:
        """This split with only ``records`` (some of its own): the raw question and annotation
        lists keep only their questions, so that scoring covers exactly what was asked."""
        if len(records) == len(self.records):
            return self
        kept = {q.question_id for r in records for q in r.questions}
        return VQASplit(records, [q for q in self.questions if q["question_id"] in kept],
                        None if self.annotations is None else
                        [a for a in self.annotations if a["question_id"] in kept], self.data_subtype)


def coco_image_name(data_subtype: str, image_id: int) -> str:
    """COCO's file name: ``COCO_train2014_000000000009.jpg``."""
    return f"COCO_{data_subtype}_{image_id:012d}.jpg"


def _image_paths(qfile: dict, path, image_dir: Path, data_subtype: str | None) -> tuple[Callable[[int], Path], str | None]:
    images = qfile.get("images")
    if images is not None:
        try:
            by_id = {int(im["id"]): image_dir / im["file_name"] for im in images}
        except (KeyError, TypeError, ValueError):
            raise UserError(f'{path}: its "images" list needs {{"id", "file_name"}} objects') from None

        def lookup(image_id: int) -> Path:
            if image_id not in by_id:
                raise UserError(f'{path}: image {image_id} is asked about but not in the "images" list')
            return by_id[image_id]

        return lookup, data_subtype or qfile.get("data_subtype")
    subtype = data_subtype or qfile.get("data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise UserError(f'{path}: no "data_subtype" (e.g. "train2014") to name COCO images by, and no "images" list')
    return (lambda image_id: image_dir / coco_image_name(subtype, image_id)), subtype


def load_vqa(questions_path: str | os.PathLike, annotations_path: str | os.PathLike | None,
             image_dir: str | os.PathLike, data_subtype: str | None = None, check_images: bool = True) -> VQASplit:
    """Read a VQA v2 split. ``annotations_path`` may be None (test-dev: questions only).
    ``data_subtype`` overrides the questions file's for the COCO naming pattern. Records keep
    the order in which images first appear in the questions file, questions their file order.
    Inconsistent files and, with ``check_images``, missing images raise :class:`UserError`."""
    qfile = read_json(questions_path, "questions file")
    if not isinstance(qfile, dict) or not isinstance(qfile.get("questions"), list):
        raise UserError(f"{questions_path} has no 'questions' list; is it a VQA questions file?")
    path_of, subtype = _image_paths(qfile, questions_path, Path(image_dir), data_subtype)

    answers_of: dict[int, list[str]] | None = None
    annotations = None
    if annotations_path is not None:
        afile = read_json(annotations_path, "annotations file")
        if not isinstance(afile, dict) or not isinstance(afile.get("annotations"), list):
            raise UserError(f"{annotations_path} has no 'annotations' list; is it a VQA annotations file?")
        annotations = afile["annotations"]
        try:
            answers_of = {a["question_id"]: [h["answer"] for h in a["answers"]] for a in annotations}
        except (KeyError, TypeError):
            raise UserError(f"{annotations_path}: every annotation needs a 'question_id' and "
                            "an 'answers' list of {\"answer\"} objects") from None

    records: dict[int, ImageQuestions] = {}
    for i, q in enumerate(qfile["questions"]):
        try:
            qid, image_id, text = q["question_id"], int(q["image_id"]), q["question"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{questions_path}: question {i} needs 'question_id', 'image_id' and 'question'") from None
        if not isinstance(text, str):
            raise UserError(f"{questions_path}: question {qid!r} is not a string")
        answers = []
        if answers_of is not None:
            if qid not in answers_of:
                raise UserError(f"{annotations_path}: question {qid!r} has no annotation; "
                                "do the two files belong to the same split?")
            answers = answers_of[qid]
        if image_id not in records:
            records[image_id] = ImageQuestions(image_id, path_of(image_id), [])
        records[image_id].questions.append(Question(qid, text, answers))
    if not records:
        raise UserError(f"{questions_path}: no questions")
    if answers_of is not None and len(answers_of) != sum(len(r.questions) for r in records.values()):
        raise UserError(f"{annotations_path}: annotates questions that are not in {questions_path}")
    if check_images:
        missing = [r.path for r in records.values() if not r.path.is_file()]
        if missing:
            raise UserError(f"{len(missing)} of {len(records)} images are missing (first: {missing[0]})")
    return VQASplit(list(records.values()), qfile["questions"], annotations, subtype)


def question_ids(vocab: Vocabulary, words: Sequence[str], max_length: int) -> list[int]:
    """Word ids of a tokenised question (``captioning.core.vocab.tokenize``), cut to
    ``max_length`` words; unknown words are ``<unk>``, and a question with no words at all is a
    lone ``<unk>`` (the RNN needs one step). No checks, no warnings: the dataset's rule, which
    :meth:`vqa.api.VQAModel.encode_question` applies to a user's question after checking it."""
    return [vocab.index.get(w, vocab.unk_id) for w in words[:max_length]] or [vocab.unk_id]


class VQADataset(ImageGroupDataset):
    """Item i: image i as uint8 (3, S, S), the word ids of all its questions and, given an
    answer vocabulary, their soft targets (n, K)."""

    def __init__(self, records: Sequence[ImageQuestions], vocab: Vocabulary, image_size: int,
                 max_question_length: int, answers: AnswerVocab | None = None, images: ImageSource | None = None):
        super().__init__(records, image_size, images)
        self.answers = answers
        # Tokenise once, up front: cheap next to image decoding, and workers share the result.
        self.questions = [[question_ids(vocab, tokenize(q.text), max_question_length) for q in r.questions]
                          for r in self.records]

    def sort_keys(self) -> list[int]:
        """Per image, its longest question in words, for the length-bucketing sampler."""
        return [max(map(len, qs), default=0) for qs in self.questions]

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        targets = None
        if self.answers is not None:
            targets = torch.stack([self.answers.soft_target(q.answers) for q in record.questions])  # (n, K)
        return {"image": self.image(i), "questions": self.questions[i],
                "targets": targets, "question_ids": [q.question_id for q in record.questions],
                "image_id": record.image_id}


@dataclass
class VQABatch:
    images: torch.Tensor  # (B, 3, S, S) uint8
    questions: torch.Tensor  # (M, L) long word ids, padded with 0
    lengths: torch.Tensor  # (M,) words per question
    image_index: torch.Tensor  # (M,) which image of the batch each question asks about
    targets: torch.Tensor | None  # (M, K) soft VQA scores; None without annotations
    question_ids: list[int]
    image_ids: list[int]

    def _map(self, fn) -> VQABatch:
        return VQABatch(fn(self.images), fn(self.questions), fn(self.lengths), fn(self.image_index),
                        None if self.targets is None else fn(self.targets), self.question_ids, self.image_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> VQABatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> VQABatch:
        return self._map(lambda t: t.pin_memory())


def collate_vqa(items: list[dict]) -> VQABatch:
    qs = [(i, q) for i, item in enumerate(items) for q in item["questions"]]
    questions, lengths = pad_sequences([q for _, q in qs])
    has_targets = items[0]["targets"] is not None
    return VQABatch(torch.stack([item["image"] for item in items]), questions, lengths,
                    torch.tensor([i for i, _ in qs], dtype=torch.long),
                    torch.cat([item["targets"] for item in items]) if has_targets else None,
                    [qid for item in items for qid in item["question_ids"]], [item["image_id"] for item in items])
