"""The official VQA accuracy (Antol et al. 2015, "VQA"; Goyal et al. 2017, VQA v2).

An answer is right in full when at least 3 of the humans gave it: on each of the 10
leave-one-out subsets of the 10 human answers it scores min(1, matches / 3), and its accuracy
is the mean over the subsets. :func:`evaluate` follows ``vqaEval.py`` of GT-Vision-Lab/VQA
(``PythonEvaluationTools/vqaEvaluation/``): same normalisation, same averages, the same
rounding to 2 decimals of a percentage, the same names (``overall``, ``perQuestionType``,
``perAnswerType``), and the same demand that the results answer every annotated question and
nothing else.

That file has two versions that score differently, so the metric takes a ``protocol``:

- ``"2021"`` (the default): commit a013f00 of 2021-03-11, "Fixed processing answers bug", the
  code as it is today and what current papers and codebases score with;
- ``"2016"``: commit 458a8b2, the code from 2016 to 2021, for numbers published before.

They differ only in which answers are normalised (:func:`vqa_accuracy` says how); on
lowercase answers with digits and no stray punctuation or whitespace they agree.

Multiple choice (VQA v1, the ``multiple_choices`` of each question) is scored the same way;
only the prediction differs: the model picks among the 18 candidates
(:meth:`vqa.answers.AnswerVocab.rank_choices`, the project's one multiple-choice rule), and the answer must be one of them word for word.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

from captioning.core.errors import UserError
from captioning.core.fileio import read_json
from vqa.answers import normalize_answer, process_punctuation, strip_whitespace

ROUND_DIGITS = 2  # the official ``n``
# Versions of the official vqaEval.py, by year: "2021" is commit a013f00, "2016" is 458a8b2.
PROTOCOLS = ("2021", "2016")
DEFAULT_PROTOCOL = "2021"


def vqa_accuracy(prediction: str, human_answers: Sequence[str],
                 protocol: str = DEFAULT_PROTOCOL) -> float:
    """Official accuracy in [0, 1] of ``prediction`` against the human answers.

    ``protocol="2021"`` (official commit a013f00): the human answers and the prediction have
    ``\\n``/``\\t`` turned into spaces and are stripped. If the human answers then still
    differ, all of them and the prediction get the full normalisation
    (:func:`vqa.answers.normalize_answer`: punctuation, lowercase, number words, articles,
    contractions); if they are unanimous, nothing more is done, and the prediction must
    equal them character for character: ``"Fish"`` scores 0 against ten ``"fish"``, and
    ``"yes."`` scores 1 against ten ``"yes."``.

    ``protocol="2016"`` (official commit 458a8b2): the prediction always gets the full
    normalisation. The human answers are never stripped, lowercased or given digits; when
    they are not all identical (as written, whitespace included) they lose only their
    punctuation (:func:`vqa.answers.process_punctuation`). So a ``"two"`` among the humans
    never matches (the prediction ``"two"`` becomes ``"2"``), nor does ``"yes "``.

    With 10 answers, 1 match gives 0.3, 2 give 0.6, 3 give 0.9, 4 or more give 1.0.
    """
    if not human_answers:
        raise ValueError("VQA accuracy needs at least one human answer")
    check_protocol(protocol)
    gts = list(human_answers)
    if protocol == "2016":
        pred = normalize_answer(prediction)
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    else:
        pred = strip_whitespace(prediction)
        gts = [strip_whitespace(a) for a in gts]
        if len(set(gts)) > 1:
            pred = normalize_answer(pred)
            gts = [normalize_answer(a) for a in gts]
    matches = sum(gt == pred for gt in gts)
    # Each subset leaves out one human; summed in the official order so that the float
    # (and therefore the rounded percentage) is bit for bit the official one.
    per_subset = [min(1, float(matches - (gt == pred)) / 3) for gt in gts]
    return float(sum(per_subset)) / len(per_subset)


def check_protocol(protocol: str) -> None:
    """Raise :class:`UserError` unless ``protocol`` is one of :data:`PROTOCOLS`."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown VQA accuracy protocol {protocol!r}: choose "
                        f"{' or '.join(map(repr, PROTOCOLS))} (the official code of that year)")


def evaluate(results: Sequence[dict], questions: Sequence[dict] | None,
             annotations: Sequence[dict], multiple_choice: bool = False,
             protocol: str = DEFAULT_PROTOCOL) -> dict:
    """Official VQA accuracy of ``results`` (``[{"question_id", "answer"}]``) against the
    ``"questions"`` and ``"annotations"`` lists of the VQA question and annotation files,
    each question scored by :func:`vqa_accuracy` under ``protocol`` (``"2021"``, the
    official code today, or ``"2016"``, the one before).

    Returns percentages rounded to 2 decimals as the official code prints them:
    ``overall``, ``perAnswerType`` and ``perQuestionType`` (the types present only) and
    ``perQuestion`` (question id -> accuracy); ``exact`` holds the first three unrounded,
    ``num_questions`` the count, ``protocol`` the protocol. ``questions`` may be ``None`` for
    open-ended results; given, it must hold every annotated question. With
    ``multiple_choice``, every answer must be one of its question's ``multiple_choices``.
    Inconsistent inputs raise :class:`UserError`.
    """
    check_protocol(protocol)
    gts = _index_annotations(annotations)
    answers = _index_results(results, gts)
    if questions is not None or multiple_choice:
        if questions is None:
            raise UserError("multiple-choice evaluation needs the questions file")
        _check_questions(questions, gts, answers if multiple_choice else None)

    per_question, by_qtype, by_atype = {}, defaultdict(list), defaultdict(list)
    for qid, ann in gts.items():  # annotation order, as the official code
        acc = vqa_accuracy(answers[qid], [a["answer"] for a in ann["answers"]], protocol)
        per_question[qid] = acc
        by_qtype[ann["question_type"]].append(acc)
        by_atype[ann["answer_type"]].append(acc)

    def percent(accs) -> float:
        return 100 * float(sum(accs)) / len(accs)

    exact = {
        "overall": percent(list(per_question.values())),
        "perQuestionType": {t: percent(a) for t, a in by_qtype.items()},
        "perAnswerType": {t: percent(a) for t, a in by_atype.items()},
    }
    return {
        "overall": round(exact["overall"], ROUND_DIGITS),
        "perQuestionType": {t: round(v, ROUND_DIGITS) for t, v in exact["perQuestionType"].items()},
        "perAnswerType": {t: round(v, ROUND_DIGITS) for t, v in exact["perAnswerType"].items()},
        "perQuestion": {q: round(100 * a, ROUND_DIGITS) for q, a in per_question.items()},
        "exact": exact,
        "num_questions": len(per_question),
        "protocol": protocol,
    }


def evaluate_files(results_path: str | os.PathLike, questions_path: str | os.PathLike,
                   annotations_path: str | os.PathLike, protocol: str = DEFAULT_PROTOCOL) -> dict:
    """:func:`evaluate` on the official files; multiple choice when the questions file says
    ``"task_type": "Multiple Choice"``."""
    check_protocol(protocol)
    results = read_json(results_path, "results file")
    if not isinstance(results, list):
        raise UserError(f"results file {results_path} must hold a JSON list of "
                        '{"question_id", "answer"} objects')
    questions_file = read_json(questions_path, "questions file")
    annotations_file = read_json(annotations_path, "annotations file")
    questions = _field(questions_file, "questions", questions_path)
    annotations = _field(annotations_file, "annotations", annotations_path)
    multiple_choice = questions_file.get("task_type") == "Multiple Choice"
    return evaluate(results, questions, annotations, multiple_choice=multiple_choice, protocol=protocol)


def _field(obj, key: str, path) -> list:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
        raise UserError(f"{path} has no '{key}' list; is it a VQA {key} file?")
    return obj[key]


def _index_annotations(annotations: Sequence[dict]) -> dict:
    gts = {}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise UserError(f"annotation {i} is not a JSON object")
        missing = [k for k in ("question_id", "answers", "question_type", "answer_type") if k not in ann]
        if missing:
            raise UserError(f"annotation {i} lacks {', '.join(map(repr, missing))}; "
                            "is this a VQA annotation file?")
        answers = ann["answers"]
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers)):
            raise UserError(f"annotation of question {ann['question_id']!r} needs a non-empty "
                            "'answers' list of {\"answer\": str} objects")
        if ann["question_id"] in gts:
            raise UserError(f"question {ann['question_id']!r} is annotated twice")
        gts[ann["question_id"]] = ann
    if not gts:
        raise UserError("the annotations are empty: nothing to evaluate")
    return gts


def _index_results(results: Sequence[dict], gts: dict) -> dict:
    answers = {}
    for i, res in enumerate(results):
        if not isinstance(res, dict) or "question_id" not in res or "answer" not in res:
            raise UserError(f'result {i} is not a {{"question_id", "answer"}} object')
        qid, answer = res["question_id"], res["answer"]
        if not isinstance(answer, str):
            raise UserError(f"the answer to question {qid!r} is {type(answer).__name__}, not a string")
        if qid not in gts:
            raise UserError(f"results answer question {qid!r}, which is not in the annotations")
        if qid in answers:
            raise UserError(f"results answer question {qid!r} twice")
        answers[qid] = answer
    if len(answers) != len(gts):
        missing = [q for q in gts if q not in answers]
        raise UserError(f"results miss {len(missing)} of {len(gts)} annotated questions "
                        f"(first: {missing[0]!r}); the official evaluation needs them all")
    return answers


def _check_questions(questions: Sequence[dict], gts: dict, mc_answers: dict | None) -> None:
    by_id = {}
    for i, q in enumerate(questions):
        if not isinstance(q, dict) or "question_id" not in q:
            raise UserError(f"question {i} has no 'question_id'; is this a VQA questions file?")
        by_id[q["question_id"]] = q
    missing = [qid for qid in gts if qid not in by_id]
    if missing:
        raise UserError(f"{len(missing)} annotated questions are not in the questions file "
                        f"(first: {missing[0]!r}); do the two files belong to the same split?")
    if mc_answers is None:
        return
    for qid, answer in mc_answers.items():
        choices = by_id[qid].get("multiple_choices")
        if not isinstance(choices, list):
            raise UserError(f"question {qid!r} has no 'multiple_choices' "
                            "(VQA v2 has none: evaluate it open-ended)")
        if answer not in choices:
            raise UserError(f"the answer {answer!r} to question {qid!r} is not one of its multiple choices")
