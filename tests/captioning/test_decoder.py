import pytest
import torch

from bench.baselines import old_forward as _old_forward
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
@pytest.mark.parametrize("static", [False, True])
def test_compiled_step_gives_the_same_loss_and_gradients(static):
    # torch.compile on the CPU: minutes of C++ compilation on a small machine, hence slow.
    feats, captions, lengths, image_index = batch()
    results = []
    for compiled in (False, True):
        dec = make()
        if compiled:
            dec.compile_step(static=static)
            assert dec.padded_steps == static
        logits, alphas = dec(feats, captions, lengths, image_index)
        loss, _, _ = caption_loss(logits, alphas, captions, alpha_c=1.0)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in dec.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _random_batch(gen, vocab):
    m, b = int(torch.randint(2, 9, (1,), generator=gen)), int(torch.randint(1, 4, (1,), generator=gen))
    lengths = torch.randint(2, 9, (m,), generator=gen)
    captions = torch.zeros(m, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        captions[i, :n] = torch.cat([torch.tensor([1]), torch.randint(4, vocab, (n - 2,), generator=gen), torch.tensor([2])])
    return torch.randn(b, 4, 6, generator=gen), captions, lengths, torch.randint(0, b, (m,), generator=gen)


def test_lean_forward_equals_the_step_by_step_oracle():
    # Logits, attention, loss and every parameter's gradient, in training mode (dropout 0 so
    # that both draw nothing), on random batches with captions of many lengths.
    gen = torch.Generator().manual_seed(5)
    for _trial in range(6):
        feats, captions, lengths, image_index = _random_batch(gen, 12)
        results = []
        # "padded": every caption at every step, the ended ones carried along and dropped (static shapes).
        for forward in ("old", "new", "packed", "padded", "padded packed"):
            dec = make().train()
            dec.padded_steps = forward.startswith("padded")
            grid = feats.clone().requires_grad_()  # as from a CNN being fine-tuned
            if forward == "old":
                logits, alphas = _old_forward(dec, grid, captions, lengths, image_index)
            else:
                logits, alphas = dec(grid, captions, lengths, image_index, packed=forward.endswith("packed"))
            loss, ce, att = caption_loss(logits, alphas, captions, alpha_c=1.0)
            loss.backward()
            results.append((logits, alphas, torch.stack([loss, ce, att]).detach(),
                            {"features": grid.grad, **{n: p.grad for n, p in dec.named_parameters()}}))
        (old_logits, old_alphas, old_loss, old_grads) = results[0]
        for logits, alphas, losses, grads in results[1:]:
            if not isinstance(logits, torch.Tensor):  # packed: one row per real word, step by step
                valid = (torch.arange(captions.size(1) - 1).unsqueeze(1) < (lengths - 1).unsqueeze(0))  # (L-1, M)
                assert logits.logits.size(0) == int((lengths - 1).sum())
                assert sorted(logits.targets.tolist()) == sorted(captions[:, 1:].t()[valid].tolist())
            else:
                torch.testing.assert_close(logits, old_logits.detach())
            torch.testing.assert_close(alphas, old_alphas.detach())
            torch.testing.assert_close(losses, old_loss)
            assert grads.keys() == old_grads.keys()
            for name in grads:
                torch.testing.assert_close(grads[name], old_grads[name], msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_summed_once_equal_autograd(dtype):
    # A CNN being fine-tuned: the grid's gradient and the recurrent weights' formed once after
    # the steps (_GridGradient, _WeightGradient) against plain autograd's step-by-step sums, in
    # fp32 and under bf16 autocast (its products in bf16, the features and weights fp32); the
    # oracle test above covers them in fp32 too.
    gen = torch.Generator().manual_seed(3)
    for _trial in range(3):
        feats, captions, lengths, image_index = _random_batch(gen, 12)
        grads = []
        for deferred in (False, True):
            dec = make().train()
            dec._grid_gradient = dec._weight_gradient = deferred
            grid = feats.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                logits, alphas = dec(grid, captions, lengths, image_index, packed=True)
                loss, _, _ = caption_loss(logits, alphas, captions, alpha_c=1.0)
            loss.backward()
            grads.append((grid.grad, [p.grad for p in dec.parameters()]))
        (plain, plain_params), (deferred, deferred_params) = grads
        assert deferred.dtype == torch.float32 and deferred.abs().max() > 0
        tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(rtol=2e-2, atol=1e-3)
        torch.testing.assert_close(deferred, plain, **tol)
        for a, b in zip(plain_params, deferred_params):
            torch.testing.assert_close(a, b, **tol)


def test_dropout_acts_on_the_classifier_input_in_training_only():
    dec = make()
    dec.dropout.p = 0.5
    feats, captions, lengths, image_index = batch()
    dec.eval()
    a, _ = dec(feats, captions, lengths, image_index)
    b, _ = dec(feats, captions, lengths, image_index)
    assert torch.equal(a, b)
    dec.train()
    c, _ = dec(feats, captions, lengths, image_index)
    assert not torch.allclose(a, c)
