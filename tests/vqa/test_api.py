"""vqa.api: VQAModel.from_pretrained(path)(image, question) in the Hugging Face pipeline's shape."""

import warnings

import pytest
from PIL import Image

import vqa.api
from captioning.core.errors import UserError
from vqa.api import QuestionTruncatedWarning, UnknownChoiceWarning, UnknownWordsWarning, VQAModel

from .conftest import MAX_WORDS


@pytest.fixture(scope="module")
def vqa_model(trained_vqa):
    return VQAModel.from_pretrained(trained_vqa.checkpoint)


def test_answers_like_the_pipeline(vqa_model, shapes_vqa):
    record = shapes_vqa.val.records[0]
    out = vqa_model(record.path, "what shape is it?", top_k=4)
    assert len(out) == 4 and all(set(r) == {"answer", "score"} for r in out)
    assert all(0.0 <= r["score"] <= 1.0 for r in out) and out == sorted(out, key=lambda r: -r["score"])
    assert {r["answer"] for r in out} <= set(shapes_vqa.answers.answers)
    assert len(vqa_model(Image.open(record.path), "what shape is it?", top_k=100)) == len(shapes_vqa.answers)


def test_choices_restrict_the_answers(vqa_model, shapes_vqa):
    record = shapes_vqa.val.records[0]
    color = record.questions[0].answers[0]
    everything = {r["answer"]: r["score"] for r in vqa_model(record.path, "what color is the shape?", top_k=100)}
    with pytest.warns(UnknownChoiceWarning, match="'Purple' is not an answer the model knows"):
        out = vqa_model(record.path, "what color is the shape?", choices=["Purple", "green", "Red", "blue"], top_k=4)
    # Each candidate as written, scored as the vocabulary answer it normalises to; unknown ones 0.
    assert {r["answer"] for r in out} == {"Purple", "green", "Red", "blue"}
    scores = {r["answer"]: r["score"] for r in out}
    assert scores["Purple"] == 0.0 and out[-1]["answer"] == "Purple"
    assert scores["Red"] == everything["red"] and scores["green"] == everything["green"]
    assert vqa_model(record.path, "what color is the shape?", choices=["blue", "red", "green"], top_k=1)[0]["answer"] == color


@pytest.mark.filterwarnings("ignore::vqa.api.UnknownWordsWarning")  # "really" is not a shapes word
def test_long_questions_are_cut_with_a_warning(vqa_model, shapes_vqa):
    path = shapes_vqa.val.records[0].path
    long_question = "what color is the shape? " + "really " * 20
    with pytest.warns(QuestionTruncatedWarning, match=f"reads only the first {MAX_WORDS}"):
        prediction = vqa_model.predict(path, long_question)
    assert prediction.truncated
    # The words beyond the limit change nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuestionTruncatedWarning)
        warnings.simplefilter("ignore", UnknownWordsWarning)
        assert vqa_model(path, "what color is the shape? really really") == prediction.answers


def test_unknown_words_are_read_as_unk(vqa_model, shapes_vqa):
    ids, unknown, truncated, found = vqa_model.encode_question("what colour is the hexagon?")
    assert found == [(UnknownWordsWarning, "words the model does not know, read as <unk>: 'colour', 'hexagon'")]
    assert unknown == ["colour", "hexagon"] and not truncated
    assert vqa_model.question_vocab.decode_tokens(ids) == ["what", "<unk>", "is", "the", "<unk>", "?"]
    with pytest.warns(UnknownWordsWarning):
        prediction = vqa_model.predict(shapes_vqa.val.records[0].path, "what colour is the hexagon?")
    assert prediction.unknown_words == ["colour", "hexagon"] and len(prediction.answers) == 5
    with pytest.warns(UnknownWordsWarning, match="the question has no words the model knows .* the answer is a guess"):
        vqa_model.predict(shapes_vqa.val.records[0].path, "zzyzx quux")


@pytest.mark.parametrize("question", ["???", "?", "...", "zzyzx?"])
def test_a_question_with_no_word_the_model_knows_warns(vqa_model, shapes_vqa, question):
    """"???" was answered ("no 1.0000") with no warning: "?" is in the vocabulary, but it is no word."""
    with pytest.warns(UnknownWordsWarning, match="the question has no words the model knows") as caught:
        prediction = vqa_model.predict(shapes_vqa.val.records[0].path, question)
    # one decision, three readers: the Python warning, the prediction (CLI, page, JSON) agree
    assert prediction.warnings == [str(w.message) for w in caught] and len(prediction.warnings) == 1
    assert prediction.to_json()["warnings"] == prediction.warnings


def test_arguments_are_checked(vqa_model, shapes_vqa):
    """choices="red|blue" was split into letters; top_k=0 or 1.5 reached torch."""
    path = shapes_vqa.val.records[0].path
    as_list = vqa_model(path, "what color is the shape?", choices=["red", "blue"])
    assert vqa_model(path, "what color is the shape?", choices="red|blue") == as_list
    assert {r["answer"] for r in as_list} == {"red", "blue"}
    for kw, message in [({"top_k": 0}, "top_k must be at least 1"), ({"top_k": 1.5}, "top_k must be a whole number"),
                        ({"choices": " | "}, "no answer choices given"), ({"choices": 3}, "choices must be a list")]:
        with pytest.raises(UserError, match=message):
            vqa_model(path, "what color is the shape?", **kw)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr", "HSV"])
def test_any_pil_mode(vqa_model, shapes_vqa, mode):
    """VQAModel(pil_image, q) used to fail for these modes, or read YCbCr / HSV as RGB."""
    with Image.open(shapes_vqa.val.records[0].path) as im:
        rgb = im.convert("RGB")
    src = rgb.convert("L").convert(mode) if mode in ("I;16", "I", "F", "1") else rgb.convert(mode)
    answers = vqa_model(src, "what color is the shape?", top_k=1)
    if mode in ("RGBA", "P", "CMYK", "YCbCr", "HSV"):  # the colours survive
        assert answers[0]["answer"] == vqa_model(rgb, "what color is the shape?", top_k=1)[0]["answer"]


def test_bad_input_is_a_user_error(vqa_model, shapes_vqa, tmp_path):
    path = shapes_vqa.val.records[0].path
    with pytest.raises(UserError, match="empty"):
        vqa_model(path, "   ")
    with pytest.raises(UserError, match="no such file"):
        vqa_model(tmp_path / "missing.png", "what shape is it?")
    with pytest.raises(UserError, match="no default checkpoint"):
        vqa.api.resolve_checkpoint(None, tmp_path / "vqa_easy_vqa.safetensors")
    caption_like = tmp_path / "x.safetensors"
    caption_like.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a valid checkpoint"):
        VQAModel.from_pretrained(caption_like)


def test_default_checkpoint_is_the_shipped_easy_vqa_one():
    from captioning.core.checkpoint import CHECKPOINT_DIR

    assert vqa.api.DEFAULT_VQA_CHECKPOINT == CHECKPOINT_DIR / "vqa_easy_vqa.safetensors"


def test_the_module_docstring_example_runs(monkeypatch):
    """The example at the top of vqa/api.py, with the shipped model and its example image."""
    import doctest
    from pathlib import Path

    import vqa.api

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    result = doctest.testmod(vqa.api, raise_on_error=False, verbose=False)
    assert result.attempted >= 2 and result.failed == 0
