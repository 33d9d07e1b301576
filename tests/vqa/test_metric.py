import json

import pytest

from captioning.core.errors import UserError
from vqa.answers import AnswerVocab
from captioning.core.fileio import read_json
from vqa.metric import evaluate, evaluate_files, multiple_choice_predict, vqa_accuracy


def ten(*groups):
    """(answer, count) pairs -> 10 human answers."""
    out = [a for a, n in groups for _ in range(n)]
    assert len(out) == 10
    return out


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9),
                                               (4, 1.0), (7, 1.0), (10, 1.0)])
def test_accuracy_leave_one_out_worked_examples(matches, expected):
    humans = ten(("yes", matches), ("no", 10 - matches))
    assert vqa_accuracy("yes", humans) == pytest.approx(expected)


def test_prediction_is_normalised():
    humans = ten(("2", 4), ("3", 6))
    assert vqa_accuracy("Two.", humans) == 1.0
    assert vqa_accuracy("the dog!", ten(("dog", 3), ("cat", 7))) == pytest.approx(0.9)


def test_human_answers_only_lose_punctuation_and_only_when_they_disagree():
    # Disagreeing answers: punctuation goes, so "yes." matches "yes" ...
    assert vqa_accuracy("yes", ten(("yes.", 3), ("no", 7))) == pytest.approx(0.9)
    # ... but "yes!" becomes "yes " (a space, never stripped), which matches nothing.
    assert vqa_accuracy("yes", ten(("yes!", 3), ("no", 7))) == 0.0
    # ... but number words stay words: "two" (human) never equals "2" (prediction).
    assert vqa_accuracy("2", ten(("two", 5), ("3", 5))) == 0.0
    # Unanimous answers are not processed at all.
    assert vqa_accuracy("yes", ["yes!"] * 10) == 0.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


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


def test_evaluate_aggregates_like_the_official_code(data):
    results, questions, annotations = data
    out = evaluate(results, questions, annotations)
    # per question: 1.0, 0.9, 0.3, 0.6
    assert out["perQuestion"] == {1: 100.0, 2: 90.0, 3: 30.0, 4: 60.0}
    assert out["overall"] == 70.0
    assert out["perAnswerType"] == {"yes/no": 95.0, "number": 30.0, "other": 60.0}
    assert out["perQuestionType"] == {"is the": 95.0, "how many": 30.0, "what color is the": 60.0}
    assert out["exact"]["overall"] == pytest.approx(70.0)
    assert out["num_questions"] == 4
    json.dumps(out)  # the report is plain JSON


def test_overall_is_rounded_to_two_decimals(data):
    results, questions, annotations = data
    results[3]["answer"] = "green"                         # 1.0 + 0.9 + 0.3 + 0
    results[1]["answer"] = "no"                            # 1.0 + 1.0 + 0.3 + 0
    results[0]["answer"] = "no"                            # 0 + 1.0 + 0.3 + 0 = 1.3
    three = evaluate(results[:3], None, annotations[:3])   # 1.3 / 3 = 43.333...
    assert three["overall"] == 43.33
    assert three["exact"]["overall"] == pytest.approx(130 / 3)
    assert "other" not in three["perAnswerType"]           # only the types present


def test_evaluate_does_not_modify_its_inputs(data):
    results, questions, annotations = data
    annotations.append(annotation(5, ten(("yes!", 5), ("no.", 5))))
    results.append({"question_id": 5, "answer": "yes"})
    before = json.dumps(annotations)
    evaluate(results, None, annotations)
    assert json.dumps(annotations) == before


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
    scores = {"yes": 0.7, "2": 0.2, "3": 0.1}             # the head's favourite is "yes"
    assert multiple_choice_predict(scores, ["Two", "three", "blue"]) == "Two"
    assert multiple_choice_predict(lambda a: len(a), ["no", "three", "red"]) == "three"
    assert multiple_choice_predict({}, ["a", "b"]) == "a"  # nothing known: the first candidate


def test_multiple_choice_from_vocab_scores():
    vocab = AnswerVocab(["yes", "no", "red car", "2"])
    probs = [0.5, 0.3, 0.15, 0.05]
    scores = {vocab.decode(i): p for i, p in enumerate(probs)}
    assert multiple_choice_predict(scores, ["a red car", "two", "blue"]) == "a red car"


def test_multiple_choice_answers_must_be_candidates(data):
    results, questions, annotations = data
    out = evaluate(results[:2] + [{"question_id": 3, "answer": "2"}] + results[3:],
                   questions, annotations, multiple_choice=True)
    assert out["overall"] == 70.0
    with pytest.raises(UserError, match="not one of its multiple choices"):
        evaluate(results, questions, annotations, multiple_choice=True)  # "two" is not listed
    with pytest.raises(UserError, match="questions file"):
        evaluate(results, None, annotations, multiple_choice=True)


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
