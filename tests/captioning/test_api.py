"""``Captioner``: the per-word probabilities the explorer shows, on the shipped model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.api import Captioner, teacher_forced_probabilities
from captioning.core.images import read_image
from captioning.core.transforms import preprocess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("beam_size", [1, 3])
def test_word_probabilities_are_the_ones_the_search_scored(beam_size):
    """Teacher forcing the chosen words gives back the search's own score: the mean
    log-probability of the words and the final <end>."""
    captioner = Captioner.from_pretrained(precision="fp32")
    images = [read_image(EXAMPLES / "emoji_google_grinning_face.png"), read_image(EXAMPLES / "emoji_twitter_red_apple.png")]
    results = captioner(images, beam_size=beam_size)
    batch = preprocess(images, captioner.model.image_size)
    ids = [[captioner.vocab.index[w] for w in r.tokens] for r in results]
    probs = teacher_forced_probabilities(captioner.model, batch, ids)
    for image, result, p in zip(images, results, probs):
        assert result.finished and p.shape == (len(result.tokens) + 1,)
        assert float(np.log(p).mean()) == pytest.approx(result.score, abs=1e-4)
        words = captioner.word_probabilities(image, [result.tokens, ["red", "apple"]])
        assert words[0] == pytest.approx(p[:-1].tolist(), abs=1e-5) and len(words[1]) == 2
    # Several captions of one image at once: each as if alone.
    one_image = torch.zeros(2, dtype=torch.long)
    both = teacher_forced_probabilities(captioner.model, batch[:1], [ids[0], ids[1]], one_image)
    assert both[0] == pytest.approx(probs[0], abs=1e-5)


def test_the_module_docstring_example_runs(monkeypatch):
    """The example at the top of captioning/api.py, with the shipped model and its example image."""
    import doctest
    from pathlib import Path

    import captioning.api

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    result = doctest.testmod(captioning.api, raise_on_error=False, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
