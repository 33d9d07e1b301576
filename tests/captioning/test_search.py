import pytest
import torch

from captioning.decoder import AttentionDecoder, DecoderConfig
from captioning.search import beam_search, greedy, sample
from captioning.core.vocab import Vocabulary


@pytest.fixture
def decoder():
    torch.manual_seed(3)
    return AttentionDecoder(DecoderConfig(vocab_size=15, feature_dim=6, embed_dim=8, hidden_dim=12,
                                          attention_dim=7, dropout=0.0)).eval()


def test_beam_size_one_is_greedy(decoder):
    feats = torch.randn(5, 9, 6)
    for max_length in (3, 12):
        g, b = greedy(decoder, feats, max_length), beam_search(decoder, feats, 1, max_length)
        for x, y in zip(g, b):
            assert x.tokens == y.tokens
            assert x.score == pytest.approx(y.score, abs=1e-5)
            assert x.finished == y.finished
            torch.testing.assert_close(x.alphas, y.alphas)


def test_batched_beam_equals_one_image_at_a_time(decoder):
    feats = torch.randn(4, 9, 6)
    batched = beam_search(decoder, feats, beam_size=3, max_length=10)
    for i in range(4):
        alone = beam_search(decoder, feats[i:i + 1], beam_size=3, max_length=10)[0]
        assert alone.tokens == batched[i].tokens
        assert alone.score == pytest.approx(batched[i].score, abs=1e-5)


def test_beam_finds_at_least_the_greedy_score(decoder):
    feats = torch.randn(6, 9, 6)
    g, b = greedy(decoder, feats, 10), beam_search(decoder, feats, 4, 10)
    assert all(y.score >= x.score - 1e-6 for x, y in zip(g, b))


def test_shapes_and_attention(decoder):
    feats = torch.randn(2, 9, 6)
    for hyp in beam_search(decoder, feats, 3, 6) + greedy(decoder, feats, 6):
        assert hyp.alphas.shape == (len(hyp.tokens), 9)
        assert len(hyp.tokens) <= 6
        assert Vocabulary.end_id not in hyp.tokens and Vocabulary.start_id not in hyp.tokens
        if hyp.tokens:
            torch.testing.assert_close(hyp.alphas.sum(-1), torch.ones(len(hyp.tokens)))


def test_no_beam_reaches_end_within_the_limit(decoder):
    # Make <end> impossible: every hypothesis is cut at the limit, and an answer still comes back.
    with torch.no_grad():
        decoder.fc.bias[Vocabulary.end_id] = -1e4
    feats = torch.randn(3, 9, 6)
    for hyp in beam_search(decoder, feats, 3, 5):
        assert len(hyp.tokens) == 5 and not hyp.finished and hyp.alphas.shape == (5, 9)
    g = greedy(decoder, feats, 5)
    assert all(len(h.tokens) == 5 and not h.finished for h in g)
    assert [h.tokens for h in g] == [h.tokens for h in beam_search(decoder, feats, 1, 5)]


def test_sampling_is_reproducible_and_temperature_zero_is_greedy(decoder):
    feats = torch.randn(3, 9, 6)
    a = sample(decoder, feats, 8, 1.0, torch.Generator().manual_seed(1))
    b = sample(decoder, feats, 8, 1.0, torch.Generator().manual_seed(1))
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.tokens for h in sample(decoder, feats, 8, 0.0)] == [h.tokens for h in greedy(decoder, feats, 8)]
    # A very low temperature concentrates on the argmax.
    cold = sample(decoder, feats, 8, 1e-4, torch.Generator().manual_seed(2))
    assert [h.tokens for h in cold] == [h.tokens for h in greedy(decoder, feats, 8)]
