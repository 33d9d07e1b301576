"""captioning.cider: the vectorised CIDEr-D equals pycocoevalcap's, image by image."""

import random
import shutil

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioning.cider import CiderD, WordIds, compact, pad
from captioning.core.vocab import Vocabulary, tokenize
from captioning.evaluation import simple_tokenize


def toolkit(refs: dict, cands: dict) -> np.ndarray:
    """pycocoevalcap's per-image CIDEr-D of tokenized strings, in ``cands``' order."""
    _, scores = Cider().compute_score({i: refs[i] for i in cands}, {i: [cands[i]] for i in cands})
    return np.asarray(scores)


def ours(refs: dict, cands: dict) -> np.ndarray:
    words = WordIds([])
    cider = CiderD({i: [words.encode(r.split()) for r in rs] for i, rs in refs.items()})
    return cider.score(list(cands), [words.encode(cands[i].split()) for i in cands])


def random_captions(seed: int, images: int, vocab: int):
    """Short captions over a small vocabulary, so n-grams repeat within and across images;
    empty captions, one-word captions and images with 1..5 references included."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]

    def caption() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 12])))

    refs = {i: [caption() for _ in range(rng.randint(1, 5))] for i in range(images)}
    cands = {i: caption() for i in refs}
    cands[0] = refs[0][0]  # a candidate equal to a reference
    return refs, cands


@pytest.mark.parametrize("seed,vocab", [(0, 6), (1, 40), (2, 300)])
def test_equals_pycocoevalcap_on_random_captions(seed, vocab):
    refs, cands = random_captions(seed, images=120, vocab=vocab)
    expected = toolkit(refs, cands)
    assert expected.max() > 0  # the comparison is not between zeros
    np.testing.assert_allclose(ours(refs, cands), expected, rtol=0, atol=1e-6)


def test_a_score_does_not_depend_on_the_rest_of_the_batch():
    refs, cands = random_captions(3, images=40, vocab=20)
    words = WordIds([])
    cider = CiderD({i: [words.encode(r.split()) for r in rs] for i, rs in refs.items()})
    ids = {i: words.encode(c.split()) for i, c in cands.items()}
    together = cider.score(list(ids), list(ids.values()))
    alone = [cider.score([i], [ids[i]])[0] for i in ids]
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-12)
    # Several candidates for one image (SCST's samples), in any order.
    order = [5, 5, 2, 5, 2]
    np.testing.assert_allclose(cider.score(order, [ids[i] for i in order]), [alone[i] for i in order], atol=1e-12)


def test_a_corpus_larger_than_the_scored_images_changes_only_the_idf():
    """With the corpus = all images, scoring a subset differs from the toolkit on that subset
    (its document frequencies are the corpus's) but equals the toolkit on all of them."""
    refs, cands = random_captions(4, images=60, vocab=15)
    everything = ours(refs, cands)
    np.testing.assert_allclose(everything, toolkit(refs, cands), atol=1e-6)
    words = WordIds([])
    cider = CiderD({i: [words.encode(r.split()) for r in rs] for i, rs in refs.items()})
    subset = list(range(10))
    np.testing.assert_allclose(cider.score(subset, [words.encode(cands[i].split()) for i in subset]),
                               everything[:10], atol=1e-12)


def test_compact_drops_tokens_and_stops_at_end():
    remap = np.array([-1, 1, 2, 3, 4, -1, 6])  # ids 0 and 5 are dropped (padding, punctuation)
    ids = np.array([[4, 5, 6, 2, 4], [5, 5, 3, -1, -1], [2, 4, 4, 4, 4]])
    out = compact(ids, remap, stop=2)
    assert out.tolist() == [[4, 6], [3, -1], [-1, -1]]
    assert compact(pad([[1, 2], []])).tolist() == [[1, 2], [-1, -1]]


def test_words_outside_the_vocabulary_never_match_unk():
    vocab = Vocabulary.build(["a red circle"])
    words = WordIds(vocab.words)
    ref = words.encode(["a", "blue", "circle"])
    assert ref[0] == vocab.index["a"] and ref[1] >= len(vocab) and ref[1] != vocab.unk_id
    assert words.encode(["blue", ",", "circle"]) == [ref[1], ref[2]]  # the same new id; punctuation dropped
    cider = CiderD({0: [ref], 1: [words.encode(["red", "square"])]})  # idf is 0 in a one-image corpus
    unk, exact = cider.score([0, 0], [[vocab.index["a"], vocab.unk_id, vocab.index["circle"]], ref])
    assert unk < exact


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer runs in Java")
def test_equals_pycocoevalcap_on_a_results_file(trained, shapes, tmp_path):
    """A real results file (the trained captioner's captions of the shapes), read and
    PTB-tokenized by captioning.evaluation as scripts/evaluate_caption.py reads it."""
    import json

    import torch

    from captioning.api import caption_dataset
    from captioning.data import CaptionDataset
    from captioning.evaluation import load_results_pairs, score_captions

    from ..conftest import IMAGE_SIZE

    _, _, records, vocab, model = trained
    _, _, ann, _ = shapes
    with torch.no_grad():
        cands = caption_dataset(model, vocab, CaptionDataset(records, vocab, IMAGE_SIZE), beam_size=1)
    # Some captions wrong, so that scores differ between images.
    for k, i in enumerate(list(cands)[::3]):
        cands[i] = " ".join(cands[i].split()[k % 3:])
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in cands.items()]))
    refs, cands = load_results_pairs(ann, results)
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    refs_tok = tok.tokenize({i: [{"caption": c} for c in refs[i]] for i in cands})
    cands_tok = {i: c[0] for i, c in tok.tokenize({i: [{"caption": cands[i]}] for i in cands}).items()}
    expected = toolkit(refs_tok, cands_tok)
    assert len(set(expected.round(6))) > 1
    np.testing.assert_allclose(ours(refs_tok, cands_tok), expected, atol=1e-6)
    # The mean is what evaluate_caption.py reports as CIDEr.
    assert ours(refs_tok, cands_tok).mean() == pytest.approx(score_captions(refs, cands, meteor=False)["CIDEr"], abs=1e-6)


def test_the_reward_tokenization_scores_like_the_toolkit():
    """The SCST reward tokenizes references with the vocabulary's tokenizer and drops the PTB
    punctuation: on emoji-style names ("woman walking: medium skin tone") it scores as
    pycocoevalcap does on simple_tokenize'd text (java's PTB drops the same punctuation)."""
    from captioning.scst import ScstObjective

    refs = {1: ["woman walking: medium skin tone"], 2: ["flag: united states"], 3: ["man, woman and boy"],
            4: ["red heart"], 5: ["woman walking"]}
    vocab = Vocabulary.build(c for cs in refs.values() for c in cs)
    objective = ScstObjective(vocab, refs)
    cands = {1: "woman walking : medium skin tone", 2: "flag : man", 3: "man , woman", 4: "red", 5: "woman walking"}
    got = objective.rewards(list(cands), [vocab.encode(c, add_special=False) for c in cands.values()])
    expected = toolkit({i: [simple_tokenize(r) for r in rs] for i, rs in refs.items()},
                       {i: simple_tokenize(c) for i, c in cands.items()})
    assert [tokenize(c) for c in refs[3]] == [["man", ",", "woman", "and", "boy"]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
