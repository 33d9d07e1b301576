import pytest
import torch

from bench.baselines import old_forward as _old_forward
from captioning import fast_teacher_forcing
from captioning.decoder import AttentionDecoder, DecoderConfig
from captioning.training import CaptionTrainConfig, caption_loss, hard_attention_loss

# The decoder variants the tests run: the shipped one first (the fast path covers it).
VARIANTS = [dict(), dict(cell="gru"), dict(layers=2), dict(cell="gru", layers=3), dict(attention="hard"),
            dict(attention="hard", hard_decode="argmax"), dict(cell="gru", layers=2, attention="hard")]
IDS = ["/".join(str(v.get(k, d)) for k, d in (("cell", "lstm"), ("layers", 1), ("attention", "soft"))) +
       ("/argmax" if v.get("hard_decode") == "argmax" else "") for v in VARIANTS]


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


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_teacher_forcing_equals_step_by_step(variant):
    dec = make(**variant).eval()
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


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_attention_rows_sum_to_one_where_words_are_predicted(variant):
    dec = make(**variant)
    feats, captions, lengths, image_index = batch()
    _, alphas = dec(feats, captions, lengths, image_index)
    sums = alphas.sum(-1)
    for m, n in enumerate(lengths - 1):
        torch.testing.assert_close(sums[m, :n], torch.ones(int(n)))


@pytest.mark.parametrize("variant", VARIANTS[:4], ids=IDS[:4])
def test_overfits_one_batch(variant):
    dec = make(vocab=12, **variant)
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


def _reference_and_fast(dec, feats, captions, lengths, image_index, packed, dtype):
    """Loss, logits, alphas and the gradients of the grid and of every parameter, through
    the reference loop and through the fast path (same weights, fresh gradients)."""
    out = []
    for fast in (False, True):
        dec.fast = fast
        dec.zero_grad(set_to_none=True)
        grid = feats.clone().requires_grad_()  # as from a CNN being fine-tuned
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits, alphas = dec(grid, captions, lengths, image_index, packed=packed)
            loss, ce, att = caption_loss(logits, alphas, captions, alpha_c=1.0)
        loss.backward()
        if packed:  # the rows' order within a step is each path's own: compare them sorted
            logits = logits.logits[torch.argsort(logits.targets, stable=True)]
        out.append((torch.stack([loss, ce, att]).detach(), logits.detach(), alphas.detach(),
                    {"features": grid.grad, **{n: p.grad for n, p in dec.named_parameters()}}))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("way", ["shrinking", "packed", "padded", "padded packed"])
def test_fast_teacher_forcing_equals_the_reference_loop(way, dtype):
    # Every configuration the fast path covers (today: lstm/1/soft), in training mode with
    # dropout 0 (so neither draws), on random batches of captions of many lengths: loss,
    # logits, attention, the grid's and every parameter's gradient.
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    covered = [v for v in VARIANTS if fast_teacher_forcing.covers(make(**v))]
    assert covered == [{}]
    gen = torch.Generator().manual_seed(11)
    for variant in covered:
        for trial in range(4):
            dec = make(**variant).train()
            dec.padded_steps = way.startswith("padded")
            feats, captions, lengths, image_index = _random_batch(gen, 12)
            if trial == 0:
                lengths[:] = captions.size(1)  # one length for all: whether ties break alike
                captions[:, -1] = 2
            (ref_loss, ref_logits, ref_alphas, ref_grads), (loss, logits, alphas, grads) = _reference_and_fast(
                dec, feats, captions, lengths, image_index, way.endswith("packed"), dtype)
            torch.testing.assert_close(loss, ref_loss, **tol)
            if not way.endswith("packed"):
                torch.testing.assert_close(logits, ref_logits, **tol)
            torch.testing.assert_close(alphas, ref_alphas, **tol)
            assert grads.keys() == ref_grads.keys()
            for name in grads:
                torch.testing.assert_close(grads[name].float(), ref_grads[name].float(), **tol, msg=name)


def test_a_config_without_the_variant_fields_is_the_shipped_decoder():
    from captioning.model import CaptionConfig

    cfg = CaptionConfig.from_json({"encoder": {"name": "efficientnet_lite0"},
                                   "decoder": {"vocab_size": 12, "feature_dim": 6, "embed_dim": 8, "hidden_dim": 10,
                                               "attention_dim": 7, "dropout": 0.5, "max_length": 20}})
    assert (cfg.decoder.cell, cfg.decoder.layers, cfg.decoder.attention) == ("lstm", 1, "soft")
    dec = AttentionDecoder(cfg.decoder)
    # The state dict names of the decoder before the variants (checkpoints load strictly).
    assert {k.split(".")[0] for k in dec.state_dict()} == {"embedding", "attention", "init_h", "init_c", "f_beta",
                                                           "lstm", "fc"}
    assert fast_teacher_forcing.covers(dec)


@pytest.mark.parametrize("bad", [dict(cell="rnn"), dict(layers=0), dict(layers=5), dict(attention="local"),
                                 dict(hard_decode="sample")])
def test_impossible_variants_are_refused_in_one_line(bad):
    from captioning.core.errors import UserError

    with pytest.raises(UserError):
        make(**bad)


@pytest.mark.parametrize("variant", [dict(cell="gru"), dict(layers=3), dict(cell="gru", layers=2)], ids=str)
def test_state_has_a_slot_per_layer_each_from_the_mean_feature(variant):
    dec = make(**variant)
    feats = torch.randn(5, 4, 6)
    h, c = dec.init_state(feats)
    layers = variant.get("layers", 1)
    assert h.shape == (5, layers, 10) and c.shape == (5, layers, 0 if variant.get("cell") == "gru" else 10)
    torch.testing.assert_close(h, torch.tanh(dec.init_h(feats.mean(1))).view(5, layers, 10))
    if layers > 1:  # each layer its own initial state
        assert not torch.allclose(h[:, 0], h[:, 1])


def test_stacked_layers_query_attention_with_the_top_layer():
    dec = make(layers=2).eval()
    feats = torch.randn(1, 4, 6)
    memory, (h, c) = dec.memory(feats), dec.init_state(feats)
    _, _, alpha = dec.step(torch.tensor([1]), (h, c), memory)
    torch.testing.assert_close(alpha, dec.attention.weights(memory.projected, h[:, 1]).squeeze(1))
    assert not torch.allclose(alpha, dec.attention.weights(memory.projected, h[:, 0]).squeeze(1))


def test_hard_attention_samples_cells_from_alpha_and_reads_the_chosen_cell():
    dec = make(attention="hard").train()
    feats = torch.randn(1, 4, 6)
    memory = dec.memory(feats)
    query = torch.randn(20000, 10)
    big = dec.memory(feats.expand(20000, 4, 6))
    dec.sampling = True
    context, alpha, cell = dec.attend(big, query)
    torch.testing.assert_close(context, feats[0][cell])  # the chosen cell's feature, not a mixture
    one = dec.attend(big, query[:1].expand(20000, 10))  # one distribution, drawn 20000 times
    frequencies = torch.bincount(one[2], minlength=4).float() / 20000
    torch.testing.assert_close(frequencies, one[1][0], atol=0.015, rtol=0)
    dec.sampling = False  # an expectation minibatch: the soft context, no cell
    context, alpha, cell = dec.attend(memory, query[:1])
    assert cell is None
    torch.testing.assert_close(context, (alpha.unsqueeze(1) @ feats).squeeze(1))
    dec.eval()
    dec.cfg.hard_decode = "argmax"
    context, alpha, cell = dec.attend(memory, query[:1])
    assert cell == alpha.argmax(-1)
    torch.testing.assert_close(context, feats[0][cell])


def test_hard_attention_expectation_decoding_is_the_same_model_with_soft_attention():
    hard, soft = make(attention="hard").eval(), make().eval()
    soft.load_state_dict({k: v for k, v in hard.state_dict().items() if k != "reinforce_baseline"})
    feats, captions, lengths, image_index = batch()
    for a, b in zip(hard(feats, captions, lengths, image_index), soft(feats, captions, lengths, image_index)):
        torch.testing.assert_close(a, b)


def test_hard_attention_minibatches_sample_or_take_the_expectation_half_of_the_time():
    dec = make(attention="hard").train()
    feats, captions, lengths, image_index = batch()
    torch.manual_seed(0)
    sampled = 0
    for _ in range(200):
        dec(feats, captions, lengths, image_index)
        if dec.last_cells is not None:
            sampled += 1
            assert dec.last_cells.shape == (3, 5) and 0 <= int(dec.last_cells.min()) and int(dec.last_cells.max()) < 4
    assert 70 < sampled < 130
    dec.expect_prob = 1.0
    dec(feats, captions, lengths, image_index)
    assert dec.last_cells is None


def test_hard_attention_loss_reinforce_baseline_entropy_and_masking():
    cfg = CaptionTrainConfig(alpha_c=0.0)
    dec = make(attention="hard").train()
    dec.expect_prob = 0.0
    feats, captions, lengths, image_index = batch()
    torch.manual_seed(1)
    logits, alphas = dec(feats, captions, lengths, image_index)
    cells = dec.last_cells
    loss, logs = hard_attention_loss(dec, logits, alphas, captions, cfg)
    real = captions[:, 1:] != 0
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), captions[:, 1:], reduction="none")
    reward = (nll * real).sum(1) / real.sum(1)
    per_word = 3 / real.sum()  # captions / words: the authors' sums on our per-word scale
    logp = alphas.gather(2, cells.unsqueeze(2)).squeeze(2).clamp_min(1e-12).log()  # 0 past the end
    entropy = -(alphas * alphas.clamp_min(1e-12).log()).sum(-1)
    expected = (nll[real].mean() + 0.1 * per_word * (reward.unsqueeze(1) * logp * real).sum()
                - 0.002 * per_word * (entropy * real).sum())
    torch.testing.assert_close(loss, expected)
    assert float(logs["baseline"]) == 0.0  # the step used the old baseline, from 0
    torch.testing.assert_close(dec.reinforce_baseline, 0.1 * reward.mean().detach())
    # Padded steps count nothing: another cell drawn past a caption's end changes no term.
    dec.last_cells = torch.where(real, cells, (cells + 1) % 4)
    dec.reinforce_baseline.zero_()
    again, _ = hard_attention_loss(dec, logits, alphas, captions, cfg)
    torch.testing.assert_close(again, loss)
    # REINFORCE lowers the probability of cells drawn for captions worse than the baseline.
    dec.reinforce_baseline.fill_(-10.0)  # every caption worse than it
    dec.last_cells = cells
    a = alphas.detach().requires_grad_()
    loss, _ = hard_attention_loss(dec, logits.detach(), a, captions, CaptionTrainConfig(alpha_c=0.0, hard_entropy=0.0))
    loss.backward()
    chosen = a.grad.gather(2, cells.unsqueeze(2)).squeeze(2)
    assert (chosen[real] > 0).all()  # descent lowers them


@pytest.mark.parametrize("variant", VARIANTS[1:], ids=IDS[1:])
def test_every_variant_trains_and_decodes_under_bf16_autocast(variant):
    # The reference loop under autocast: its loss and gradients close to fp32's.
    from captioning.search import beam_search

    feats, captions, lengths, image_index = batch()
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        dec = make(**variant).train()
        dec.expect_prob = 1.0  # hard attention: the expectation, so that both runs draw nothing
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            logits, alphas = dec(feats, captions, lengths, image_index)
            loss = (hard_attention_loss(dec, logits, alphas, captions, CaptionTrainConfig())[0]
                    if dec.cfg.attention == "hard" else caption_loss(logits, alphas, captions, 1.0)[0])
            loss.backward()
            dec.eval()
            hyps = beam_search(dec, feats, 2, 5)
        assert len(hyps) == 2
        results.append((loss.detach(), [p.grad for p in dec.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=2e-2, atol=2e-2)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(b, a, rtol=5e-2, atol=5e-3)
