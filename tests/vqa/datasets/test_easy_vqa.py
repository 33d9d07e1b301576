"""vqa.datasets.easy_vqa: easy-VQA -> VQA v2 files, on a tiny fixture (and, marked slow, the real package)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from captioning.core.errors import UserError
from vqa.datasets.easy_vqa import annotation_file, convert_split, prepare_easy_vqa, question_file, question_type

ANSWERS = ["circle", "rectangle", "triangle", "red", "blue", "yes", "no"]
QUESTIONS = [  # (text, answer, image id), in easy-VQA's shape
    ("what shape is in the image?", "circle", 0),
    ("what color is the circle?", "red", 0),
    ("is there not a blue shape?", "yes", 0),
    ("what is the color of the shape?", "blue", 7),
    ("does the image contain a triangle?", "no", 7),
    ("is a rectangle present?", "yes", 3),
    ("what is the blue shape?", "rectangle", 3),
]


@pytest.fixture
def easy(tmp_path):
    """(texts, answers, image ids, image paths) like easy_vqa's getters return."""
    src = tmp_path / "pkg" / "train" / "images"
    src.mkdir(parents=True)
    paths = {}
    for i in (0, 3, 7, 9):  # image 9 has no question: still listed and copied
        Image.new("RGB", (64, 64), (i * 20, 100, 200)).save(src / f"{i}.png")
        paths[i] = str(src / f"{i}.png")
    texts, answers, ids = (list(x) for x in zip(*QUESTIONS))
    return texts, answers, ids, paths


def convert(easy, out: Path, **kw):
    texts, answers, ids, paths = easy
    return convert_split("train", texts, answers, ids, paths, out, answer_list=ANSWERS, **kw)


def test_vqa_v2_files(easy, tmp_path):
    out = tmp_path / "out"
    summary = convert(easy, out)
    assert (summary.images, summary.questions, summary.answers) == (4, 7, 6)  # circle red yes blue no rectangle
    q = json.loads(question_file(out, "train").read_text())
    a = json.loads(annotation_file(out, "train").read_text())
    assert question_file(out, "train").name == "v2_OpenEnded_mscoco_train_questions.json"
    assert annotation_file(out, "train").name == "v2_mscoco_train_annotations.json"
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions", "images"} <= set(q)
    assert [x["question"] for x in q["questions"]] == [t for t, _, _ in QUESTIONS]
    # Question ids: VQA v2's image_id * 1000 + k.
    assert [x["question_id"] for x in q["questions"]] == [0, 1, 2, 7000, 7001, 3000, 3001]
    by_qid = {x["question_id"]: x for x in a["annotations"]}
    assert set(by_qid) == {x["question_id"] for x in q["questions"]}
    for x, (_text, answer, image_id) in zip(q["questions"], QUESTIONS):
        ann = by_qid[x["question_id"]]
        assert ann["image_id"] == x["image_id"] == image_id
        assert ann["multiple_choice_answer"] == answer
        assert len(ann["answers"]) == 10
        assert [y["answer_id"] for y in ann["answers"]] == list(range(1, 11))
        assert all(y["answer"] == answer and y["answer_confidence"] == "yes" for y in ann["answers"])
        assert ann["answer_type"] == ("yes/no" if answer in ("yes", "no") else "other")
        assert answer not in ann["question_type"].split()


def test_images_list_resolves(easy, tmp_path):
    out = tmp_path / "out"
    convert(easy, out)
    q = json.loads(question_file(out, "train").read_text())
    assert [im["id"] for im in q["images"]] == [0, 3, 7, 9]
    for im in q["images"]:
        copied = out / "images" / "train" / im["file_name"]
        assert copied.read_bytes() == Path(easy[3][im["id"]]).read_bytes()
    assert {x["image_id"] for x in q["questions"]} <= {im["id"] for im in q["images"]}


def test_question_types():
    assert question_type("what color is the circle?") == "what color is the"
    assert question_type("what is the color of the shape?") == "what is the color of the"
    assert question_type("what is the blue shape?") == "what is the"
    assert question_type("what shape is present?") == "what shape is"
    assert question_type("is there not a red shape in the image?") == "is there not a"
    assert question_type("is there a triangle?") == "is there a"
    assert question_type("does the image not contain a circle?") == "does the image not contain a"
    assert question_type("is no gray shape present?") == "is no"
    assert question_type("where is it?") == "none of the above"


def test_second_run_identical(easy, tmp_path):
    out = tmp_path / "out"
    convert(easy, out)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    convert(easy, out)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()} == before


def test_bad_input_is_a_user_error(easy, tmp_path):
    texts, answers, ids, paths = easy
    with pytest.raises(UserError, match="no file"):
        convert_split("train", texts, answers, ids, {0: paths[0]}, tmp_path)
    with pytest.raises(UserError, match="outside the answer list"):
        convert_split("train", texts, answers, ids, paths, tmp_path, answer_list=["yes", "no"])
    with pytest.raises(UserError):
        convert_split("train", texts[:2], answers, ids, paths, tmp_path)


@pytest.mark.slow
def test_real_easy_vqa(tmp_path):
    pytest.importorskip("easy_vqa")
    summaries = {s.split: s for s in prepare_easy_vqa(tmp_path)}
    assert (summaries["train"].images, summaries["train"].questions) == (4000, 38575)
    assert (summaries["test"].images, summaries["test"].questions) == (1000, 9673)
    assert summaries["train"].answers == summaries["test"].answers == 13
    a = json.loads(annotation_file(tmp_path, "test").read_text())["annotations"]
    assert {x["answer_type"] for x in a} == {"yes/no", "other"}
    assert len({x["question_id"] for x in a}) == len(a)
