"""captioning/evaluation.py against the coco-caption toolkit run directly on the same files."""

from __future__ import annotations

import json
import shutil
import urllib.error

import pycocoevalcap.eval
import pycocoevalcap.spice.spice
import pytest
from pycocoevalcap.eval import COCOEvalCap
from pycocotools.coco import COCO

from captioning import evaluation
from captioning.core.errors import UserError
from captioning.evaluation import exact_match, score_captions, score_results_file

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the toolkit's PTB tokenizer and METEOR run in Java")

REFERENCES = {
    1: ["A dog runs across the grassy field.", "A brown dog running on grass.", "The dog's ball is red."],
    2: ["Two cats sleep on a sofa.", "A pair of cats, asleep on a couch!", "Cats napping on the sofa"],
    3: ["A man rides a wave on a surfboard.", "A surfer riding a big wave.", "Person surfing in the ocean"],
    4: ["A plate of food with broccoli.", "Broccoli and rice on a white plate."],
    5: ["A red bus on a city street.", "A double-decker bus drives down the road."],
}
# Image 5 gets no result: only images with a result are scored, as COCOEvalCap does with
# params["image_id"] = cocoRes.getImgIds().
RESULTS = [
    {"image_id": 3, "caption": "a man riding a wave on a surfboard"},
    {"image_id": 1, "caption": "a brown dog running on grass"},
    {"image_id": 2, "caption": "a cat sleeping on a couch"},
    {"image_id": 4, "caption": "a plate of food"},
]


@pytest.fixture
def coco_files(tmp_path):
    annotations = [
        {"id": 100 * image_id + k, "image_id": image_id, "caption": caption}
        for image_id, captions in REFERENCES.items()
        for k, caption in enumerate(captions)
    ]
    dataset = {
        "info": {},
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in REFERENCES],
        "annotations": annotations,
    }
    ann_file, res_file = tmp_path / "captions.json", tmp_path / "results.json"
    ann_file.write_text(json.dumps(dataset))
    res_file.write_text(json.dumps(RESULTS))
    return str(ann_file), str(res_file)


def _stub_scorer(name):
    class Skipped:
        def method(self):
            return name

        def compute_score(self, gts, res):
            return float("nan"), [float("nan")] * len(gts)

    return Skipped


def _toolkit(ann_file, res_file, monkeypatch, meteor):
    """COCOEvalCap exactly as the coco-caption example runs it, minus the scorers we skip."""
    skipped = ["SPICE"]  # needs a 400 MB download and Java 8/11
    monkeypatch.setattr(pycocoevalcap.eval, "Spice", _stub_scorer("SPICE"))
    if not meteor:
        skipped.append("METEOR")
        monkeypatch.setattr(pycocoevalcap.eval, "Meteor", _stub_scorer("METEOR"))
    coco = COCO(ann_file)
    coco_res = coco.loadRes(res_file)
    coco_eval = COCOEvalCap(coco, coco_res)
    coco_eval.params["image_id"] = coco_res.getImgIds()
    coco_eval.evaluate()
    monkeypatch.undo()
    return {k: v for k, v in coco_eval.eval.items() if k not in skipped}


@needs_java
def test_results_file_equals_toolkit_without_meteor(coco_files, monkeypatch):
    ours = score_results_file(*coco_files, allow_partial=True, meteor=False)  # 4 of the 5 images, as the toolkit scores them
    expected = _toolkit(*coco_files, monkeypatch, meteor=False)
    assert set(expected) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert {k: v for k, v in ours.items() if k != "exact_match"} == expected
    assert ours["exact_match"] == 0.25  # only image 1 repeats a reference (after normalisation)
    assert 0 < ours["CIDEr"] and 0 < ours["Bleu_4"] < ours["Bleu_1"] <= 1


@pytest.mark.slow
@needs_java
def test_results_file_equals_toolkit_with_meteor(coco_files, monkeypatch):
    ours = score_results_file(*coco_files, allow_partial=True)
    expected = _toolkit(*coco_files, monkeypatch, meteor=True)
    assert "METEOR" in expected
    assert {k: v for k, v in ours.items() if k != "exact_match"} == expected


@needs_java
def test_toolkit_chatter_stays_out_of_stdout_and_stderr(coco_files, capfd):
    """BLEU's {'testlen': ...} and the Java tokenizer's lines would land in --json output,
    training logs and progress bars."""
    score_results_file(*coco_files, allow_partial=True, meteor=False)
    out, err = capfd.readouterr()
    assert out == ""
    assert "testlen" not in err and "ratio:" not in err and "PTBTokenizer" not in err


@needs_java
def test_without_java_warns_and_approximates(monkeypatch, tmp_path):
    # Captions already lowercase and punctuation-free: the fallback tokenizer agrees with PTB.
    refs = {1: ["a dog runs on the grass", "a brown dog"], 2: ["two cats on a sofa", "cats sleeping"]}
    cands = {1: "a dog on the grass", 2: "two cats sleeping on a sofa"}
    with_java = score_captions(refs, cands, meteor=False)

    monkeypatch.setattr(evaluation.shutil, "which", lambda name, *a, **k: None)
    monkeypatch.setenv("PATH", str(tmp_path))  # any attempt to start java would now fail
    with pytest.warns(UserWarning, match="java not found.*skipping METEOR") as record:
        without = score_captions(refs, cands)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert "METEOR" not in without and "SPICE" not in without
    assert without == with_java


def test_simple_tokenize():
    assert evaluation.simple_tokenize("  A Dog's ball, in the PARK!  ") == "a dog's ball in the park"
    assert evaluation.simple_tokenize("...") == ""


def test_exact_match_worked_example():
    refs = {
        1: ["A dog runs.", "a brown dog"],  # "a  Dog runs" matches the first after normalising
        2: ["Two cats"],  # "two cats." matches
        3: ["a bird"],  # "a bird flies" is longer: no match
        4: ["x y"],  # same words, other order: no match
        5: ["unused"],  # no candidate: not counted
    }
    cands = {1: "a  Dog runs", 2: "two cats.", 3: "a bird flies", 4: "y x"}
    assert exact_match(refs, cands) == 0.5


def test_candidates_without_references_are_a_bug():
    with pytest.raises(ValueError, match="no reference"):
        score_captions({1: ["a dog"]}, {1: "a dog", 2: "a cat"}, meteor=False)
    with pytest.raises(ValueError):
        exact_match({1: ["a dog"]}, {})


def test_spice_download_failure_is_a_user_error(monkeypatch):
    def offline():
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(pycocoevalcap.spice.spice, "get_stanford_models", offline)
    with pytest.raises(UserError, match="SPICE needs Stanford CoreNLP"):
        score_captions({1: ["a dog"]}, {1: "a dog"}, meteor=False, spice=True)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such results file"),
        ("{not json", "not valid JSON"),
        ('{"image_id": 1, "caption": "a dog"}', "non-empty JSON list"),
        ("[]", "non-empty JSON list"),
        ('[{"image_id": 1, "text": "a dog"}]', "result #0 is not an object"),
        ('[{"image_id": "one", "caption": "a dog"}]', "not in the annotations"),
        ('[{"image_id": 1.5, "caption": "a dog"}]', "not an integer"),
        ('[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]', "more than one caption"),
        ('[{"image_id": 1, "caption": "a dog"}, {"image_id": 999, "caption": "a cat"}]', r"1 image id\(s\) not in the annotations"),
    ],
)
def test_bad_results_file_is_a_one_line_user_error(coco_files, tmp_path, content, message):
    ann_file, _ = coco_files
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        score_results_file(ann_file, str(bad), meteor=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [None, "[1, 2]", '{"images": []}', '{"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1}]}'],
)
def test_bad_annotation_file_is_a_user_error(coco_files, tmp_path, content):
    _, res_file = coco_files
    bad = tmp_path / "ann.json"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(UserError) as info:
        score_results_file(str(bad), res_file, meteor=False)
    assert "\n" not in str(info.value)


def test_pycocotools_asserts_on_unknown_ids(coco_files):
    # Why score_results_file checks ids itself: loadRes only asserts (and not at all under -O).
    coco = COCO(coco_files[0])
    with pytest.raises(AssertionError, match="do not correspond"):
        coco.loadRes([{"image_id": 999, "caption": "a cat"}])
