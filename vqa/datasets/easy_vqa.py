"""easy-VQA (Zhou 2020, PyPI ``easy-vqa``) converted to the VQA v2 file format.

easy-VQA is a small real VQA dataset that installs from PyPI: 64 x 64 PNGs of one coloured
shape, template questions about its shape and colour, one answer each out of 13. Converting
it to the files of VQA v2 (Goyal et al. 2017; format of Antol et al. 2015, "VQA") lets the
tests and the tutorials run the very loaders and metric that read VQA v2::

    out/v2_OpenEnded_mscoco_{train,test}_questions.json
    out/v2_mscoco_{train,test}_annotations.json
    out/images/{train,test}/<image id>.png          (easy-VQA's files, names kept)

Beyond the VQA v2 format, the questions file carries an ``images`` list ``[{"id",
"file_name"}]``: COCO-style, ``file_name`` is relative to the split's image folder
(``out/images/<split>/``), so a loader does not have to know COCO's ``COCO_train2014_%012d.jpg``
naming. VQA v2 has 10 human answers per question; easy-VQA has one, so each question gets ten
identical answers (confidence ``"yes"``) and the official accuracy is 1 or 0. Question ids
follow VQA v2's scheme, ``image_id * 1000 + k`` for the k-th question of an image (in
easy-VQA's order). ``question_type`` is the longest of :data:`QUESTION_TYPES` that starts the
question, so it never contains the colour or shape the question asks about.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from captioning.core.errors import UserError
from captioning.core.fileio import write_if_changed

SPLITS = ("train", "test")
YES_NO = ("yes", "no")
# The templates of easy-VQA's generator, as VQA v2-style prefixes (longest match wins), then
# generic VQA v2 ones for other question sets.
QUESTION_TYPES = (
    "what color is the", "what is the color of the", "what shape is", "what shape does the image contain",
    "what is the", "is there a", "is there not a", "is a", "is no",
    "does the image contain a", "does the image not contain a",
    "how many", "what color", "what is", "what", "is there", "is the", "is", "does the", "does", "are", "which", "how",
)
INFO = {"description": "easy-VQA (Victor Zhou, 2020) in the VQA v2 format", "version": "1.0", "year": 2020,
        "contributor": "Victor Zhou", "url": "https://github.com/vzhou842/easy-VQA", "date_created": ""}
LICENSE = {"name": "MIT", "url": "https://github.com/vzhou842/easy-VQA/blob/master/LICENSE"}


@dataclass
class EasyVQASummary:
    split: str
    images: int
    questions: int
    answers: int  # distinct answers

    def __str__(self) -> str:
        return f"{self.split}: {self.images:,} images, {self.questions:,} questions, {self.answers} distinct answers"


def question_type(question: str) -> str:
    words = re.findall(r"[a-z0-9']+", question.lower())
    matches = [t for t in QUESTION_TYPES if words[: len(t.split())] == t.split()]
    return max(matches, key=lambda t: len(t.split()), default="none of the above")


def answer_type(answer: str) -> str:
    return "yes/no" if answer in YES_NO else ("number" if answer.isdigit() else "other")


def question_file(out_dir: str | os.PathLike, split: str) -> Path:
    return Path(out_dir) / f"v2_OpenEnded_mscoco_{split}_questions.json"


def annotation_file(out_dir: str | os.PathLike, split: str) -> Path:
    return Path(out_dir) / f"v2_mscoco_{split}_annotations.json"


def convert_split(split: str, texts: Sequence[str], answers: Sequence[str], image_ids: Sequence[int],
                  image_paths: Mapping[int, str | os.PathLike], out_dir: str | os.PathLike,
                  answer_list: Sequence[str] | None = None) -> EasyVQASummary:
    """Write one split: the arguments are what ``easy_vqa.get_<split>_questions()`` (texts,
    answers, image ids), ``get_<split>_image_paths()`` and ``get_answers()`` return. Images
    already copied and unchanged JSON files are left alone, so a second run is a no-op."""
    if not (len(texts) == len(answers) == len(image_ids)):
        raise UserError(f"easy-VQA {split}: {len(texts)} questions, {len(answers)} answers, {len(image_ids)} image ids")
    missing = sorted({int(i) for i in image_ids} - {int(i) for i in image_paths})
    if missing:
        raise UserError(f"easy-VQA {split}: questions name images with no file, e.g. id {missing[0]}")
    if answer_list is not None:
        unknown = sorted(set(answers) - set(answer_list))
        if unknown:
            raise UserError(f"easy-VQA {split}: answers outside the answer list: {', '.join(unknown[:5])}")

    out_dir = Path(out_dir)
    image_dir = out_dir / "images" / split
    images = []
    for image_id in sorted(int(i) for i in image_paths):
        src = Path(image_paths[image_id])
        _copy_if_changed(src, image_dir / src.name)
        images.append({"id": image_id, "file_name": src.name})

    per_image: Counter[int] = Counter()
    questions, annotations = [], []
    for text, answer, image_id in zip(texts, answers, image_ids):
        image_id = int(image_id)
        question_id = image_id * 1000 + per_image[image_id]
        per_image[image_id] += 1
        if per_image[image_id] > 1000:
            raise UserError(f"easy-VQA {split}: image {image_id} has over 1000 questions; ids would collide")
        questions.append({"image_id": image_id, "question": text, "question_id": question_id})
        annotations.append({
            "question_id": question_id, "image_id": image_id,
            "question_type": question_type(text), "answer_type": answer_type(answer),
            "multiple_choice_answer": answer,
            "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": k} for k in range(1, 11)],
        })

    header = {"info": INFO, "license": LICENSE, "data_type": "easy_vqa", "data_subtype": split}
    _write_json_if_changed(question_file(out_dir, split),
                           {**header, "task_type": "Open-Ended", "images": images, "questions": questions})
    _write_json_if_changed(annotation_file(out_dir, split), {**header, "annotations": annotations})
    return EasyVQASummary(split, len(images), len(questions), len(set(answers)))


def prepare_easy_vqa(out_dir: str | os.PathLike) -> list[EasyVQASummary]:
    """Convert both splits of the installed ``easy-vqa`` package."""
    try:
        import easy_vqa
    except ImportError:
        raise UserError("the easy-vqa package is not installed (pip install easy-vqa)") from None
    answer_list = easy_vqa.get_answers()
    summaries = []
    for split, get_questions, get_paths in (
        ("train", easy_vqa.get_train_questions, easy_vqa.get_train_image_paths),
        ("test", easy_vqa.get_test_questions, easy_vqa.get_test_image_paths),
    ):
        texts, answers, image_ids = get_questions()
        summaries.append(convert_split(split, texts, answers, image_ids, get_paths(), out_dir, answer_list))
    return summaries


def _copy_if_changed(src: Path, dst: Path) -> None:
    try:
        data = src.read_bytes()
    except OSError as e:
        raise UserError(f"{src}: cannot read ({e.strerror})") from None
    write_if_changed(dst, data)


def _write_json_if_changed(path: Path, obj) -> None:
    write_if_changed(path, json.dumps(obj, indent=None, separators=(",", ":")) + "\n")
