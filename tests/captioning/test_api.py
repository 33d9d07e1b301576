"""``Captioner``: the per-word probabilities the explorer shows, and what the API accepts, on
the shipped model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.api import Captioner
from captioning.core.data import pad_sequences
from captioning.core.errors import UserError
from captioning.core.images import read_image
from captioning.core.transforms import preprocess
from captioning.core.vocab import Vocabulary

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def teacher_forced_logprobs(model, images: torch.Tensor, captions) -> list[np.ndarray]:
    """The oracle: log p of each word of each caption given the words before it, then of the
    closing <end>, by one teacher-forced forward of the model: (n_words + 1,) per caption."""
    padded, lengths = pad_sequences([[Vocabulary.start_id, *c, Vocabulary.end_id] for c in captions])
    with torch.no_grad():
        logits, _ = model(images, padded, lengths)  # (B, L-1, V)
    logp = torch.log_softmax(logits.float(), dim=-1).gather(2, padded[:, 1:, None]).squeeze(2)  # (B, L-1)
    return [logp[i, :n - 1].numpy() for i, n in enumerate(lengths.tolist())]


@pytest.mark.parametrize("beam_size", [1, 3])
def test_word_probabilities_are_the_ones_the_search_scored(beam_size):
    """The search records each word's log-probability as it chooses it: teacher forcing the
    chosen words gives them back, and the score is their mean, the closing <end> counted. The
    report shows these (there is no second pass on the display thumbnail any more)."""
    captioner = Captioner.from_pretrained(precision="fp32")
    images = [read_image(EXAMPLES / "emoji_google_grinning_face.png"), read_image(EXAMPLES / "emoji_twitter_red_apple.png")]
    results = captioner(images, beam_size=beam_size)
    batch = preprocess(images, captioner.model.image_size)
    for result, image in zip(results, batch):
        for hyp in [result, *result.alternatives]:
            ids = [captioner.vocab.index[w] for w in hyp.tokens]
            oracle = teacher_forced_logprobs(captioner.model, image[None], [ids])[0]
            assert hyp.finished and len(hyp.logprobs) == len(hyp.tokens) + 1
            assert hyp.logprobs == pytest.approx(oracle.tolist(), abs=1e-4)
            assert float(np.mean(hyp.logprobs)) == pytest.approx(hyp.score, abs=1e-5)
        item = captioner.report_item(images[0], result)
        shown = [w["p"] for w in item["hypotheses"][0]["words"]]
        assert shown == pytest.approx(np.exp(result.logprobs[:-1]).tolist(), abs=1e-4)


def test_report_item_needs_no_model_pass(monkeypatch):
    """The report's probabilities come from the result, not from running the model again."""
    captioner = Captioner.from_pretrained(precision="fp32")
    result = captioner(EXAMPLES / "emoji_google_grinning_face.png", beam_size=2)
    monkeypatch.setattr(captioner.model, "forward", None)  # any model call would fail
    monkeypatch.setattr(captioner.model, "encode", None)
    item = captioner.report_item(read_image(EXAMPLES / "emoji_google_grinning_face.png"), result)
    assert [w["p"] for w in item["hypotheses"][0]["words"]] == pytest.approx(result.word_probabilities, abs=1e-4)


@pytest.mark.parametrize("value", [None, 5, 2.5, {"a": 1}])
def test_what_is_not_an_image_is_a_user_error_naming_the_accepted_types(value):
    """captioner(None) and captioner(5) were TypeErrors from deep inside the iteration."""
    captioner = Captioner.from_pretrained(precision="fp32")
    with pytest.raises(UserError, match="give one image .*a path, an http.s. URL, a PIL image, encoded bytes"):
        captioner(value)
    with pytest.raises(UserError, match="cannot read an image from NoneType .*a path"):
        captioner([EXAMPLES / "emoji_google_grinning_face.png", None])


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_an_array_without_a_finite_value_is_refused(fill):
    """An all-NaN array used to be captioned ("large blue square")."""
    captioner = Captioner.from_pretrained(precision="fp32")
    with pytest.raises(UserError, match="every value is NaN or infinite"):
        captioner(np.full((32, 32, 3), fill, dtype=np.float32))
    mixed = np.full((32, 32, 3), np.nan, dtype=np.float32)
    mixed[:16] = 0.5  # some real pixels: still an image
    assert captioner(mixed, beam_size=1).caption


def test_the_module_docstring_example_runs(monkeypatch):
    """The example at the top of captioning/api.py, with the shipped model and its example image."""
    import doctest
    from pathlib import Path

    import captioning.api

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    result = doctest.testmod(captioning.api, raise_on_error=False, verbose=False)
    assert result.attempted >= 3 and result.failed == 0


def test_a_special_token_mid_caption_keeps_maps_and_probabilities_on_their_words():
    """A weak model may emit <pad> or <start> mid-caption; the words drop them, and the maps and
    log-probabilities recorded per position must drop the same positions (the report raised
    "cannot reshape" on such a caption, and each word showed its neighbour's map)."""
    from captioning.search import Hypothesis

    captioner = Captioner.from_pretrained(precision="fp32")
    vocab, (h, w) = captioner.vocab, captioner.model.grid_shape()
    red, apple = vocab.index["red"], vocab.index["apple"]
    alphas = torch.softmax(torch.randn(4, h * w), dim=1)  # (T, P) one map per position
    hyp = Hypothesis([red, Vocabulary.pad_id, Vocabulary.start_id, apple], -1.0, alphas, True, [-0.1, -0.2, -0.3, -0.4, -0.5])
    assert vocab.word_positions(hyp.tokens) == [0, 3]
    result = captioner._result(hyp, "x")
    assert result.tokens == ["red", "apple"] and result.caption == "red apple"
    np.testing.assert_array_equal(result.attention, alphas[[0, 3]].reshape(2, h, w).numpy())
    assert result.logprobs == [-0.1, -0.4, -0.5]  # the words', then the closing <end>'s
    item = captioner.report_item(read_image(EXAMPLES / "emoji_twitter_red_apple.png"), result)
    assert [wd["text"] for wd in item["hypotheses"][0]["words"]] == ["red", "apple"]
