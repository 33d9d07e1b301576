import pytest
import torch

from captioning.decoder import AttentionDecoder, DecoderConfig
from captioning.training import caption_loss


def make(vocab=12, **kw):
    torch.manual_seed(0)
    return AttentionDecoder(DecoderConfig(vocab_size=vocab, feature_dim=6, embed_dim=8, hidden_dim=10,
                                          attention_dim=7, dropout=0.0, **kw))


def batch():
    feats = torch.randn(2, 4, 6)  # 2 images, 2x2 grid
    captions = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0], [1, 8, 9, 10, 11, 2]])
    lengths = torch.tensor([4, 3, 6])
    image_index = torch.tensor([0, 1, 1])
    return feats, captions, lengths, image_index


def test_teacher_forcing_equals_step_by_step():
    dec = make().eval()
    feats, captions, lengths, image_index = batch()
    logits, alphas = dec(feats, captions, lengths, image_index)
    assert logits.shape == (3, 5, 12) and alphas.shape == (3, 5, 4)
    for m in range(3):
        f = feats[image_index[m]].unsqueeze(0)
        mem, state = dec.memory(f), dec.init_state(f)
        for t in range(int(lengths[m]) - 1):
            step_logits, state, alpha = dec.step(captions[m, t:t + 1], state, mem)
            torch.testing.assert_close(logits[m, t], step_logits[0])
            torch.testing.assert_close(alphas[m, t], alpha[0])
        # Past the caption's end nothing was computed.
        assert (logits[m, int(lengths[m]) - 1:] == 0).all()


def test_attention_rows_sum_to_one_where_words_are_predicted():
    dec = make()
    feats, captions, lengths, image_index = batch()
    _, alphas = dec(feats, captions, lengths, image_index)
    sums = alphas.sum(-1)
    for m, n in enumerate(lengths - 1):
        torch.testing.assert_close(sums[m, :n], torch.ones(int(n)))


def test_overfits_one_batch():
    dec = make(vocab=12)
    dec.train()
    _, captions, lengths, _ = batch()
    feats, image_index = torch.randn(3, 4, 6), torch.arange(3)  # one image per caption: no ambiguity left
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = None
    for _ in range(300):
        logits, alphas = dec(feats, captions, lengths, image_index)
        loss, ce, _ = caption_loss(logits, alphas, captions, alpha_c=1.0)
        first = first if first is not None else ce.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ce.item() < 0.05 < first


@pytest.mark.slow
def test_compiled_step_gives_the_same_loss_and_gradients():
    # torch.compile on the CPU: minutes of C++ compilation on a small machine, hence slow.
    feats, captions, lengths, image_index = batch()
    results = []
    for compiled in (False, True):
        dec = make()
        if compiled:
            dec.compile_step()
        logits, alphas = dec(feats, captions, lengths, image_index)
        loss, _, _ = caption_loss(logits, alphas, captions, alpha_c=1.0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in dec.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
