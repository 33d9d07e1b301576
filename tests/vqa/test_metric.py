import json
import random

import pytest
import torch

from captioning.core.errors import UserError
from captioning.core.fileio import read_json
from vqa.answers import AnswerVocab, normalize_answer
from vqa.metric import PROTOCOLS, evaluate, evaluate_files, vqa_accuracy


def ten(*groups):
    """(answer, count) pairs -> 10 human answers."""
    out = [a for a, n in groups for _ in range(n)]
    assert len(out) == 10
    return out


# Each case is worked out by hand from the official vqaEval.py at both commits (a013f00, 2021,
# and 458a8b2, 2016): which answers are stripped / normalised, how many humans then equal the
# prediction, and the leave-one-out mean (10 humans: 1 match 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1.0).
WORKED_EXAMPLES = [
    # prediction, humans, 2021, 2016
    # Unanimous humans. 2021 strips both sides and normalises nothing else; 2016 normalises
    # the prediction in full and leaves the humans as written.
    ("fish", ten(("fish", 10)), 1.0, 1.0),
    (" fish\n", ten(("fish", 10)), 1.0, 1.0),    # stripped (2021) / stripped by normalisation (2016)
    ("Fish", ten(("fish", 10)), 0.0, 1.0),       # 2021: "Fish" != "fish"; 2016: lowercased
    ("fish", ten(("Fish", 10)), 0.0, 0.0),       # nobody lowercases the humans
    ("Fish", ten(("Fish", 10)), 1.0, 0.0),       # 2021: equal as written; 2016: "fish" != "Fish"
    ("yes.", ten(("yes.", 10)), 1.0, 0.0),       # 2016: the prediction loses its period, the humans keep theirs
    ("yes", ten(("yes!", 10)), 0.0, 0.0),        # unanimous humans keep their "!" in both
    ("two", ten(("two", 10)), 1.0, 0.0),         # 2016: the prediction becomes "2"
    ("two", ten(("2", 10)), 0.0, 1.0),           # 2021: no number words when unanimous
    ("don't", ten(("dont", 10)), 0.0, 0.0),
    ("dont", ten(("don't", 10)), 0.0, 1.0),      # 2016: the prediction gets its apostrophe back
    # Humans differing only by whitespace: unanimous once stripped (2021), mixed in 2016,
    # where "yes\n" and "yes " (no punctuation to lose) match nothing.
    ("yes", ten(("yes", 2), ("yes\n", 5), ("yes ", 3)), 1.0, 0.6),
    ("Yes", ten(("yes", 2), ("yes\n", 5), ("\tyes", 3)), 0.0, 0.6),  # 2021: unanimous, so case counts
    ("yes", ten(("yes\n", 3), ("no", 7)), 0.9, 0.0),
    # Mixed humans. 2021 normalises both sides in full; 2016 only strips the humans' punctuation.
    ("Fish", ten(("fish", 3), ("cat", 7)), 0.9, 0.9),
    ("yes", ten(("Yes.", 3), ("no", 7)), 0.9, 0.0),   # 2016: "Yes" != "yes"
    ("yes", ten(("yes.", 3), ("no", 7)), 0.9, 0.9),
    ("yes", ten(("yes!", 3), ("no", 7)), 0.9, 0.0),   # "!" becomes a space; only 2021 splits it off
    ("Yes.", ten(("yes", 3), ("no", 7)), 0.9, 0.9),
    ("2", ten(("two", 3), ("3", 7)), 0.9, 0.0),       # number word on the humans' side
    ("two", ten(("2", 3), ("3", 7)), 0.9, 0.9),       # ... on the prediction's side
    ("the dog!", ten(("dog", 3), ("cat", 7)), 0.9, 0.9),
    ("don't", ten(("dont", 4), ("no", 6)), 1.0, 0.0),  # contraction restored on the humans' side
    ("dont", ten(("don't", 4), ("no", 6)), 1.0, 1.0),  # ... on the prediction's side
]


@pytest.mark.parametrize("prediction, humans, expected_2021, expected_2016", WORKED_EXAMPLES)
def test_worked_examples_under_both_protocols(prediction, humans, expected_2021, expected_2016):
    assert vqa_accuracy(prediction, humans, protocol="2021") == pytest.approx(expected_2021)
    assert vqa_accuracy(prediction, humans, protocol="2016") == pytest.approx(expected_2016)
    assert vqa_accuracy(prediction, humans) == pytest.approx(expected_2021)  # the default


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9),
                                               (4, 1.0), (7, 1.0), (10, 1.0)])
def test_accuracy_leave_one_out_worked_examples(matches, expected, protocol):
    humans = ten(("yes", matches), ("no", 10 - matches))
    assert vqa_accuracy("yes", humans, protocol) == pytest.approx(expected)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_leave_one_out_averages_over_every_human(protocol):
    # 5 humans, 2 say "red": leaving out one of those 2 leaves 1 match (1/3), leaving out one
    # of the other 3 leaves 2 (2/3); the mean is (2 * 1/3 + 3 * 2/3) / 5 = 8/15.
    assert vqa_accuracy("red", ["red", "blue", "red", "blue", "blue"], protocol) == pytest.approx(8 / 15)


def test_protocols_agree_on_ordinary_answers():
    """Lowercase answers with digits, no stray punctuation or whitespace (as the released
    annotations and our classifier's vocabulary are) score the same under both protocols."""
    pool = ["yes", "no", "2", "10", "1.5", "red", "fire hydrant", "don't know", "blue and white"]
    assert all(normalize_answer(a) == a for a in pool)  # what "ordinary" means here
    rng = random.Random(0)
    checked = set()
    for _ in range(400):
        humans = [rng.choice(pool[:rng.randint(1, len(pool))]) for _ in range(10)]
        prediction = rng.choice(pool)
        a2021, a2016 = (vqa_accuracy(prediction, humans, p) for p in ("2021", "2016"))
        assert a2021 == a2016, (prediction, humans)
        checked.add(a2021)
    assert {0.0, 1.0} < checked  # the draw reached partial, full and zero scores


def test_unknown_protocol_is_a_user_error(data):
    results, questions, annotations = data
    with pytest.raises(UserError, match="2021"):
        vqa_accuracy("yes", ["yes"], protocol="2017")
    with pytest.raises(UserError, match="protocol"):
        evaluate(results, questions, annotations, protocol=2021)


def annotation(qid, humans, qtype="is the", atype="yes/no"):
    return {"question_id": qid, "image_id": 1, "question_type": qtype, "answer_type": atype,
            "multiple_choice_answer": humans[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(humans)]}


@pytest.fixture
def data():
    annotations = [
        annotation(1, ten(("yes", 10)), "is the", "yes/no"),
        annotation(2, ten(("yes", 3), ("no", 7)), "is the", "yes/no"),
        annotation(3, ten(("2", 1), ("3", 9)), "how many", "number"),
        annotation(4, ten(("red", 2), ("blue", 8)), "what color is the", "other"),
    ]
    questions = [{"question_id": q, "image_id": 1, "question": "?",
                  "multiple_choices": ["yes", "no", "2", "3", "red", "blue"]} for q in (1, 2, 3, 4)]
    results = [{"question_id": 1, "answer": "yes"}, {"question_id": 2, "answer": "yes"},
               {"question_id": 3, "answer": "two"}, {"question_id": 4, "answer": "red"}]
    return results, questions, annotations


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_evaluate_aggregates_like_the_official_code(data, protocol):
    results, questions, annotations = data
    out = evaluate(results, questions, annotations, protocol=protocol)
    # per question: 1.0, 0.9, 0.3, 0.6
    assert out["perQuestion"] == {1: 100.0, 2: 90.0, 3: 30.0, 4: 60.0}
    assert out["overall"] == 70.0
    assert out["perAnswerType"] == {"yes/no": 95.0, "number": 30.0, "other": 60.0}
    assert out["perQuestionType"] == {"is the": 95.0, "how many": 30.0, "what color is the": 60.0}
    assert out["exact"]["overall"] == pytest.approx(70.0)
    assert out["num_questions"] == 4 and out["protocol"] == protocol
    json.dumps(out)  # the report is plain JSON


def test_evaluate_scores_each_question_under_its_protocol(data):
    results, questions, annotations = data
    annotations.append(annotation(5, ten(("Two", 3), ("3", 7)), "how many", "number"))
    results.append({"question_id": 5, "answer": "2"})
    per_protocol = {p: evaluate(results, None, annotations, protocol=p) for p in PROTOCOLS}
    # Question 5: "Two" is "2" once normalised (2021), and stays "Two" in 2016.
    assert per_protocol["2021"]["perQuestion"][5] == 90.0
    assert per_protocol["2016"]["perQuestion"][5] == 0.0
    assert per_protocol["2021"]["perAnswerType"]["number"] == 60.0   # (0.3 + 0.9) / 2
    assert per_protocol["2016"]["perAnswerType"]["number"] == 15.0   # (0.3 + 0) / 2
    assert per_protocol["2021"]["overall"] == 74.0                   # (1 + .9 + .3 + .6 + .9) / 5
    assert per_protocol["2016"]["overall"] == 56.0                   # (1 + .9 + .3 + .6 + 0) / 5
    assert evaluate(results, None, annotations) == per_protocol["2021"]  # the default


def test_overall_is_rounded_to_two_decimals(data):
    results, questions, annotations = data
    results[3]["answer"] = "green"                         # 1.0 + 0.9 + 0.3 + 0
    results[1]["answer"] = "no"                            # 1.0 + 1.0 + 0.3 + 0
    results[0]["answer"] = "no"                            # 0 + 1.0 + 0.3 + 0 = 1.3
    three = evaluate(results[:3], None, annotations[:3])   # 1.3 / 3 = 43.333...
    assert three["overall"] == 43.33
    assert three["exact"]["overall"] == pytest.approx(130 / 3)
    assert "other" not in three["perAnswerType"]           # only the types present


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_evaluate_does_not_modify_its_inputs(data, protocol):
    results, questions, annotations = data
    annotations.append(annotation(5, ten(("Yes!", 5), (" no.", 5))))
    results.append({"question_id": 5, "answer": "Yes "})
    before = json.dumps([results, annotations])
    evaluate(results, None, annotations, protocol=protocol)
    assert json.dumps([results, annotations]) == before


def test_missing_question_is_a_user_error(data):
    results, questions, annotations = data
    with pytest.raises(UserError, match="miss 1 of 4"):
        evaluate(results[:3], questions, annotations)


@pytest.mark.parametrize("bad, message", [
    ({"question_id": 99, "answer": "yes"}, "not in the annotations"),
    ({"question_id": 1, "answer": "no"}, "twice"),
    ({"question_id": 1}, "question_id"),
    ({"question_id": 1, "answer": 3}, "not a string"),
])
def test_bad_results_are_user_errors(data, bad, message):
    results, questions, annotations = data
    with pytest.raises(UserError, match=message):
        evaluate(results + [bad], questions, annotations)


def test_bad_annotations_are_user_errors(data):
    results, questions, annotations = data
    del annotations[0]["answer_type"]
    with pytest.raises(UserError, match="answer_type"):
        evaluate(results, questions, annotations)


def test_questions_from_another_split_are_a_user_error(data):
    results, questions, annotations = data
    with pytest.raises(UserError, match="same split"):
        evaluate(results, questions[:2], annotations)


def test_multiple_choice_picks_the_best_candidate_not_the_global_argmax():
    vocab = AnswerVocab(["yes", "2", "3", "red car"])
    probs = torch.tensor([0.7, 0.2, 0.1, 0.15])            # the head's favourite is "yes"
    ranked, unknown = vocab.rank_choices(probs, ["Two", "three", "blue"])
    assert [r["answer"] for r in ranked] == ["Two", "three", "blue"] and unknown == ["blue"]
    assert ranked[0]["score"] == pytest.approx(0.2) and ranked[2]["score"] == 0.0
    # As written, normalised to look up: "a red car" finds "red car".
    assert vocab.rank_choices(probs, ["three", "a red car"])[0][0]["answer"] == "a red car"
    # Nothing known: the given order; ties too; blanks and repeats dropped.
    assert [r["answer"] for r in vocab.rank_choices(probs, ["b", " a ", "b", ""])[0]] == ["b", "a"]
    with pytest.raises(UserError, match="no answer choices"):
        vocab.rank_choices(probs, [" ", ""])


def test_multiple_choice_answers_must_be_candidates(data):
    results, questions, annotations = data
    out = evaluate(results[:2] + [{"question_id": 3, "answer": "2"}] + results[3:],
                   questions, annotations, multiple_choice=True)
    assert out["overall"] == 70.0
    with pytest.raises(UserError, match="not one of its multiple choices"):
        evaluate(results, questions, annotations, multiple_choice=True)  # "two" is not listed
    with pytest.raises(UserError, match="questions file"):
        evaluate(results, None, annotations, multiple_choice=True)


def test_multiple_choice_is_scored_under_the_protocol(tmp_path):
    annotations = [annotation(1, ten(("two", 3), ("3", 7)), "how many", "number")]
    questions = [{"question_id": 1, "image_id": 1, "question": "?", "multiple_choices": ["two", "3", "red"]}]
    results = [{"question_id": 1, "answer": "two"}]
    # 2021: both sides normalise to "2", 3 matches; 2016: only the prediction becomes "2".
    assert evaluate(results, questions, annotations, multiple_choice=True)["overall"] == 90.0
    assert evaluate(results, questions, annotations, multiple_choice=True, protocol="2016")["overall"] == 0.0
    # The same through the files, which say "Multiple Choice".
    for name, obj in (("res", results), ("q", {"task_type": "Multiple Choice", "questions": questions}),
                      ("a", {"annotations": annotations})):
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
    paths = [tmp_path / f"{name}.json" for name in ("res", "q", "a")]
    assert evaluate_files(*paths)["overall"] == 90.0
    assert evaluate_files(*paths, protocol="2016")["overall"] == 0.0


def test_evaluate_files_and_file_errors(tmp_path, data):
    results, questions, annotations = data
    (tmp_path / "res.json").write_text(json.dumps(results))
    (tmp_path / "q.json").write_text(json.dumps({"task_type": "Open-Ended", "questions": questions}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": annotations}))
    out = evaluate_files(tmp_path / "res.json", tmp_path / "q.json", tmp_path / "a.json")
    assert out["overall"] == 70.0

    (tmp_path / "q.json").write_text(json.dumps({"task_type": "Multiple Choice", "questions": questions}))
    with pytest.raises(UserError, match="multiple choices"):
        evaluate_files(tmp_path / "res.json", tmp_path / "q.json", tmp_path / "a.json")

    (tmp_path / "broken.json").write_text('{"annotations": [')
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "broken.json", "annotations")
    with pytest.raises(UserError, match="no such results file"):
        evaluate_files(tmp_path / "nope.json", tmp_path / "q.json", tmp_path / "a.json")
    with pytest.raises(UserError, match="no 'annotations' list"):
        evaluate_files(tmp_path / "res.json", tmp_path / "q.json", tmp_path / "q.json")
