import pytest
import torch

from captioning.core.vocab import Vocabulary
from captioning.decoder import AttentionDecoder, DecoderConfig
from captioning.search import beam_search, greedy, sample


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


def _random_decoder(seed: int, vocab: int, end_bias: float, **variant) -> AttentionDecoder:
    torch.manual_seed(seed)
    dec = AttentionDecoder(DecoderConfig(vocab_size=vocab, feature_dim=5, embed_dim=6, hidden_dim=8,
                                         attention_dim=4, dropout=0.0, **variant)).eval()
    with torch.no_grad():
        dec.fc.weight.mul_(4.0)  # peaked distributions: beams diverge from greedy and from each other
        dec.fc.bias[Vocabulary.end_id] += end_bias
    return dec


def _same(new, old):
    assert new.tokens == old.tokens and new.finished == old.finished
    assert new.score == pytest.approx(old.score, abs=1e-9, rel=0)
    assert torch.equal(new.alphas, old.alphas)


# end_bias: -1e4 never ends (every caption is cut), 0 rarely, +1 sometimes, +2 / +4 often and early.
@pytest.mark.parametrize("end_bias", [-1e4, 0.0, 1.0, 2.0, 4.0])
def test_beam_search_equals_the_loop_oracle_on_random_models(end_bias, variant=None, trials=12):
    from tests.captioning.beam_oracle import oracle_beam_search

    gen = torch.Generator().manual_seed(int(end_bias) + 7)
    for trial in range(trials):
        vocab = int(torch.randint(5, 30, (1,), generator=gen))
        k = int(torch.randint(1, 6, (1,), generator=gen))
        max_length = int(torch.randint(1, 9, (1,), generator=gen))
        penalty = (0.0, 0.7, 1.0)[trial % 3]
        dec = _random_decoder(trial, vocab, end_bias, **(variant or {}))
        feats = torch.randn(int(torch.randint(1, 6, (1,), generator=gen)), 4, 5, generator=gen)
        new = beam_search(dec, feats, k, max_length, penalty)
        found = oracle_beam_search(dec, feats, k, max_length, penalty, return_all=True)
        assert len(new) == len(found)
        for hyp, hyps in zip(new, found):
            _same(hyp, max(hyps, key=lambda h: h.score))  # the oracle's own choice
            # The K best of everything the oracle found, best first, the earlier of equal scores first.
            ranked = sorted(hyps, key=lambda h: -h.score)[:k]
            assert len(hyp.alternatives) == len(ranked) - 1
            for a, b in zip([hyp, *hyp.alternatives], ranked):
                _same(a, b)


@pytest.mark.parametrize("variant", [dict(cell="gru"), dict(layers=2), dict(attention="hard"),
                                     dict(cell="gru", layers=3, attention="hard", hard_decode="argmax")], ids=str)
def test_beam_search_equals_the_loop_oracle_for_every_decoder_variant(variant):
    # The state is (h, c) of (N, layers, H) (a GRU's c empty): beams copy every layer's.
    test_beam_search_equals_the_loop_oracle_on_random_models(1.0, variant, trials=6)
    dec = _random_decoder(0, 12, 0.0, **variant)
    feats = torch.randn(3, 4, 5)
    assert [h.tokens for h in beam_search(dec, feats, 1, 6)] == [h.tokens for h in greedy(dec, feats, 6)]


def test_alternatives_are_distinct_and_best_first(decoder):
    feats = torch.randn(4, 9, 6)
    for hyp in beam_search(decoder, feats, 4, 8):
        every = [hyp, *hyp.alternatives]
        assert len(every) == 4
        assert [h.score for h in every] == sorted((h.score for h in every), reverse=True)
        assert len({tuple(h.tokens) for h in every}) == 4
        assert all(h.alphas.shape == (len(h.tokens), 9) for h in every)
        assert not any(h.alternatives for h in hyp.alternatives)
    assert all(not h.alternatives for h in greedy(decoder, feats, 8))


def test_beam_search_equals_the_loop_oracle_on_the_shipped_checkpoint():
    from pathlib import Path

    from captioning.api import load_caption_model
    from captioning.core.images import read_image
    from captioning.core.transforms import preprocess
    from tests.captioning.beam_oracle import oracle_beam_search

    examples = Path(__file__).resolve().parents[2] / "examples"
    model, _, _ = load_caption_model(examples.parent / "checkpoints" / "caption_emoji.safetensors")
    images = preprocess([read_image(p) for p in sorted(examples.glob("*.png"))], model.image_size)  # emoji and others
    with torch.no_grad():
        feats = model.encode(images)
    for k, max_length in ((2, 20), (3, 20), (5, 20), (3, 2)):
        found = oracle_beam_search(model.decoder, feats, k, max_length, return_all=True)
        for hyp, hyps in zip(beam_search(model.decoder, feats, k, max_length), found):
            for a, b in zip([hyp, *hyp.alternatives], sorted(hyps, key=lambda h: -h.score)[:k], strict=True):
                _same(a, b)


@pytest.mark.parametrize("length_penalty", [1.0, 0.7])
def test_every_search_records_the_log_probability_of_each_token_it_chose(decoder, length_penalty):
    """logprobs: one per word, then one for the closing <end> when finished (none for a cut
    caption); the score is exactly their length-normalised sum, for greedy, sampling and beam
    search, the beam's alternatives and cut captions included."""
    feats = torch.randn(5, 9, 6)
    generator = torch.Generator().manual_seed(0)
    runs = {"greedy": greedy(decoder, feats, 6, length_penalty),
            "sample": sample(decoder, feats, 6, 1.3, generator, length_penalty),
            "beam": beam_search(decoder, feats, 3, 6, length_penalty),
            "beam, short": beam_search(decoder, feats, 3, 2, length_penalty)}
    cut = 0
    for name, hyps in runs.items():
        for hyp in [h for top in hyps for h in [top, *top.alternatives]]:
            assert len(hyp.logprobs) == len(hyp.tokens) + hyp.finished, name
            assert all(lp <= 0 for lp in hyp.logprobs), name
            total = sum(hyp.logprobs) / len(hyp.logprobs) ** length_penalty
            assert total == pytest.approx(hyp.score, abs=1e-5), name
            cut += not hyp.finished
    assert cut  # the short limit cut some


def test_beam_logprobs_match_a_teacher_forced_replay(decoder):
    """Each recorded log-probability is the decoder's own for that word after those before it."""
    feats = torch.randn(3, 9, 6)
    for i, top in enumerate(beam_search(decoder, feats, 3, 8)):
        for hyp in [top, *top.alternatives]:
            memory = decoder.memory(feats[i:i + 1])
            h, c = decoder.init_state(feats[i:i + 1])
            token = torch.tensor([Vocabulary.start_id])
            replay = []
            for word in hyp.tokens + ([Vocabulary.end_id] if hyp.finished else []):
                with torch.no_grad():
                    logits, (h, c), _ = decoder.step(token, (h, c), memory)
                replay.append(float(torch.log_softmax(logits.float(), -1)[0, word]))
                token = torch.tensor([word])
            assert hyp.logprobs == pytest.approx(replay, abs=1e-5)
