"""vqa.data: VQA v2 files with both image-naming schemes, items of one image and all its questions."""

import json

import pytest
import torch

from captioning.core.errors import UserError
from captioning.core.vocab import Vocabulary, tokenize
from vqa.data import coco_image_name, collate_vqa, load_vqa, question_ids

from ..shapes import VQA_QUESTIONS, make_vqa_dataset
from .conftest import IMAGE_SIZE, MAX_WORDS


def test_images_list_naming(shapes_vqa):
    split = shapes_vqa.train
    assert len(split.records) == 18 and split.num_questions == 54
    assert all(r.path.is_file() and r.path.suffix == ".png" for r in split.records)
    first = split.records[0]
    assert [q.text for q in first.questions] == [q[0] for q in VQA_QUESTIONS]
    assert [q.question_id for q in first.questions] == [first.image_id * 1000 + k for k in range(3)]
    assert len(first.questions[0].answers) == 10


def test_coco_naming_pattern(shapes_vqa):
    split = shapes_vqa.val
    assert split.data_subtype == "val2014"
    assert all(r.path.name == coco_image_name("val2014", r.image_id) for r in split.records)
    assert split.records[0].path.name == f"COCO_val2014_{split.records[0].image_id:012d}.jpg"
    assert all(r.path.is_file() for r in split.records)


def test_items_collate_with_image_index_and_soft_targets(shapes_vqa):
    ds = shapes_vqa.dataset(shapes_vqa.val)
    batch = collate_vqa([ds[0], ds[1]])
    assert batch.images.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and batch.images.dtype == torch.uint8
    assert batch.image_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.questions.shape == (6, int(batch.lengths.max())) and (batch.questions[:, 0] > 0).all()
    assert batch.targets.shape == (6, len(shapes_vqa.answers))
    answers = shapes_vqa.answers
    record = shapes_vqa.val.records[0]
    color, shape = record.questions[0].answers[0], record.questions[1].answers[0]
    assert batch.targets[0, answers.encode(color)] == 1.0 and batch.targets[0].sum() == 1.0
    assert batch.targets[1, answers.encode(shape)] == 1.0
    yes_no = batch.targets[2]  # 9 humans said one thing, 1 the other: 1.0 and 0.3
    assert sorted(yes_no[yes_no > 0].tolist()) == pytest.approx([0.3, 1.0])
    assert batch.question_ids == [q.question_id for r in shapes_vqa.val.records[:2] for q in r.questions]
    # Without an answer vocabulary (a test split): no targets.
    assert collate_vqa([shapes_vqa.dataset(shapes_vqa.val, with_targets=False)[0]]).targets is None


def test_unknown_words_are_unk_and_long_questions_are_cut():
    vocab = Vocabulary.build(["what color is the shape?"])
    ids = question_ids(vocab, tokenize("what colour is the hexagon?"), MAX_WORDS)
    assert vocab.decode_tokens(ids) == ["what", "<unk>", "is", "the", "<unk>", "?"]
    assert len(question_ids(vocab, tokenize("what " * 50), MAX_WORDS)) == MAX_WORDS
    assert question_ids(vocab, tokenize(""), MAX_WORDS) == [vocab.unk_id]


def test_questions_without_annotations(shapes_vqa):
    q, _, images = shapes_vqa.files["val"]
    split = load_vqa(q, None, images)
    assert split.annotations is None and all(not question.answers for r in split.records for question in r.questions)


def test_missing_images_and_mismatched_files(tmp_path, shapes_vqa):
    q, a, images = make_vqa_dataset(tmp_path, n_images=3, seed=5, naming="coco")
    next(images.iterdir()).unlink()
    with pytest.raises(UserError, match="1 of 3 images are missing"):
        load_vqa(q, a, images)
    with pytest.raises(UserError, match="has no annotation"):
        load_vqa(q, shapes_vqa.files["train"][1], images, check_images=False)
    obj = json.loads(q.read_text())
    del obj["data_subtype"]
    q.write_text(json.dumps(obj))
    with pytest.raises(UserError, match="data_subtype"):
        load_vqa(q, a, images)
    assert load_vqa(q, a, images, data_subtype="other2014", check_images=False).records[0].path.name.startswith("COCO_other2014_")
    with pytest.raises(UserError, match="no such questions file"):
        load_vqa(tmp_path / "nope.json", a, images)
