import json

import pytest
import torch

from captioning.core.errors import UserError
from vqa.answers import (
    CONTRACTIONS,
    AnswerVocab,
    answer_accuracy,
    normalize_answer,
    process_digit_article,
    process_punctuation,
)
from vqa.metric import vqa_accuracy


@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"),
    ("none", "0"),
    ("ten.", "10"),
    ("the dog.", "dog"),
    ("a red car", "red car"),
    ("An apple", "apple"),
    ("yes!", "yes"),
    ("yes !", "yes"),
    ("Yes?", "yes"),
    ("dont", "don't"),
    ("isnt", "isn't"),
    ("don't", "don't"),            # the apostrophe is not punctuation to the official code
    ("1,000", "1000"),             # a digit-comma-digit deletes every punctuation mark
    ("dog, cat", "dog cat"),       # a mark touching a space is deleted
    ("black-white", "black white"),  # a mark between letters becomes a space
    ("10.5", "10.5"),              # a period followed by a digit stays
    ("5.", "5"),
    ("3.14.", "3.14"),
    (" Yes\n", "yes"),
    ("on\tthe left", "on left"),
    ("Im", "im"),                  # the official table's capitalised keys never match
])
def test_normalize_answer_official_cases(raw, expected):
    assert normalize_answer(raw) == expected


def test_normalisation_is_idempotent():
    samples = ["Two", "the dog.", "yes!", "dont", "1,000", "10.5", "a red car", "dog, cat",
               "black-white", "none of the above", "y'allll", "wouldnt've", "3.14."]
    for s in samples:
        once = normalize_answer(s)
        assert normalize_answer(once) == once


def test_punctuation_and_digit_steps_are_separate():
    # Punctuation alone neither lowercases nor maps numbers; the metric relies on that split.
    assert process_punctuation("Two dogs!") == "Two dogs "
    assert process_digit_article("The Two dogs") == "2 dogs"


def test_contraction_table_is_the_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # reversed in the original, kept
    assert all("’" not in k + v for k, v in CONTRACTIONS.items())  # straight apostrophes


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9),
                                               (4, 1.0), (10, 1.0)])
def test_answer_accuracy_worked_examples(matches, expected):
    assert answer_accuracy(matches, 10) == pytest.approx(expected)


def anns(*mc_answers):
    return [{"question_id": i, "multiple_choice_answer": a} for i, a in enumerate(mc_answers)]


def test_vocab_top_k_by_count_then_alphabetically():
    vocab = AnswerVocab.from_annotations(
        anns("yes", "Yes", "yes.", "no", "no", "2", "two", "zebra", "apple", "the"), top_k=4)
    # yes x3, no x2, 2 x2 (ties alphabetical: "2" < "no"), then apple/zebra x1 -> apple
    assert vocab.answers == ["yes", "2", "no", "apple"]
    assert len(vocab) == 4
    assert vocab.encode("Two") == 1 and vocab.encode("zebra") is None
    assert vocab.decode(vocab.encode("the apple")) == "apple"
    assert "" not in vocab.answers  # "the" normalises to nothing and is skipped


def test_vocab_smaller_than_top_k_when_few_answers():
    assert len(AnswerVocab.from_annotations(anns("yes", "no"), top_k=3000)) == 2


def test_vocab_json_round_trip(tmp_path):
    vocab = AnswerVocab.from_annotations(anns("yes", "no", "no", "red car", "2"))
    path = tmp_path / "answers.json"
    path.write_text(json.dumps(vocab.to_json()))
    again = AnswerVocab.from_json(json.loads(path.read_text()))
    assert again.answers == vocab.answers
    assert [again.encode(a) for a in ("no", "yes", "a red car")] == [vocab.encode(a) for a in ("no", "yes", "a red car")]


@pytest.mark.parametrize("bad", [{}, {"answers": "yes"}, {"answers": ["yes", 3]},
                                 {"answers": ["yes", "yes"]}, ["yes"]])
def test_vocab_from_bad_json_is_a_user_error(bad):
    with pytest.raises(UserError):
        AnswerVocab.from_json(bad)


def test_vocab_from_annotations_without_answers_is_a_user_error():
    with pytest.raises(UserError, match="multiple_choice_answer"):
        AnswerVocab.from_annotations([{"question_id": 1, "answers": []}])


def test_soft_target_values():
    vocab = AnswerVocab(["yes", "no", "2", "red car"])
    humans = ["yes"] * 3 + ["no"] * 2 + ["two"] + ["maybe"] * 4
    target = vocab.soft_target(humans)
    assert target.shape == (4,) and target.dtype == torch.float32
    assert target.tolist() == pytest.approx([0.9, 0.6, 0.3, 0.0])  # "two" counts as "2"


def test_soft_target_is_the_metric_on_normalised_answers():
    vocab = AnswerVocab(["yes", "no", "2", "red car", "blue"])
    humans = ["yes"] * 4 + ["no"] * 2 + ["2"] + ["red car"] * 3
    target = vocab.soft_target(humans)
    for i, answer in enumerate(vocab.answers):
        assert target[i].item() == pytest.approx(vqa_accuracy(answer, humans))


def test_soft_target_may_sum_above_one_and_counts_normalised_answers():
    vocab = AnswerVocab(["yes", "no"])
    target = vocab.soft_target(["Yes"] * 5 + ["no."] * 5)
    assert target.tolist() == pytest.approx([1.0, 1.0])
    assert vocab.soft_target(["maybe"] * 10).sum().item() == 0.0
