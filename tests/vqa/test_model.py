"""vqa.model: every fusion overfits a small batch, and saves, reloads and answers identically."""

import numpy as np
import pytest
import torch

from vqa.api import VQAModel, answer_scores
from vqa.data import collate_vqa
from vqa.fusion import FUSIONS
from vqa.model import VQANet
from vqa.training import VQATask, soft_accuracy, vqa_loss

from .conftest import tiny_train_config, tiny_vqa_config

STEPS = 50


def overfit(shapes_vqa, fusion: str, **kw):
    torch.manual_seed(0)
    model = VQANet(tiny_vqa_config(len(shapes_vqa.words), len(shapes_vqa.answers), fusion, **kw))
    ds = shapes_vqa.dataset(shapes_vqa.train)
    batch = collate_vqa([ds[i] for i in range(6)])  # 6 images, 18 questions
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=2e-2)
    model.train()
    losses = []
    for _ in range(STEPS):
        logits, _ = model(batch.images, batch.questions, batch.lengths, batch.image_index)
        loss = vqa_loss(logits, batch.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), batch, losses


@pytest.fixture(scope="module")
def overfitted(shapes_vqa):
    return {fusion: overfit(shapes_vqa, fusion) for fusion in FUSIONS}


@pytest.mark.parametrize("fusion", FUSIONS)
def test_each_fusion_overfits_a_small_batch(overfitted, fusion):
    model, batch, losses = overfitted[fusion]
    assert losses[-1] < 0.15 * losses[0], losses[::10]
    logits, alpha = model(batch.images, batch.questions, batch.lengths, batch.image_index)
    # The batch holds mirrored pairs (the same shape on the left and on the right). concat and
    # mul see the grid's mean, which is nearly blind to position, so the left/right questions
    # of a pair look alike to them: everything else must be learnt; of the 6 position questions
    # (one per image, 18 questions in all) at least half must be right: >= 15/18.
    assert soft_accuracy(logits, batch.targets).item() >= (1.0 if fusion == "attention" else 15 / 18 - 1e-6)
    assert (alpha is not None) == (fusion == "attention")
    assert not any(p.requires_grad for p in model.encoder.parameters())  # the CNN stayed frozen


def test_gru_bidirectional_two_layers_one_glimpse_overfits_too(shapes_vqa):
    model, batch, losses = overfit(shapes_vqa, "attention", question=dict(rnn="gru", rnn_layers=2, bidirectional=True))
    assert losses[-1] < 0.15 * losses[0]


@pytest.mark.parametrize("fusion", FUSIONS)
def test_save_reload_answers_identically(overfitted, shapes_vqa, fusion, tmp_path):
    model, batch, _ = overfitted[fusion]
    path = tmp_path / f"{fusion}.safetensors"
    VQATask(model, shapes_vqa.words, shapes_vqa.answers, None, None, None, tiny_train_config(),
            trained_on="test shapes").save(path, {"epoch": 0})
    loaded = VQAModel.from_pretrained(path)
    assert loaded.model.cfg == model.cfg and loaded.extra["trained_on"] == "test shapes"
    assert "encoder._fc.weight" not in dict(loaded.model.named_parameters())  # no ImageNet head saved
    before, alpha_before = answer_scores(model, batch.images, batch.questions, batch.lengths, batch.image_index)
    after, alpha_after = answer_scores(loaded.model, batch.images, batch.questions, batch.lengths, batch.image_index)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    if fusion == "attention":
        torch.testing.assert_close(alpha_before, alpha_after, rtol=0, atol=0)
    # Through the public API, from the image file, twice: the same answers and scores.
    record = shapes_vqa.train.records[0]
    for question in record.questions:
        first = loaded(record.path, question.text, top_k=3)
        assert first == VQAModel.from_pretrained(path)(record.path, question.text, top_k=3)
        if fusion == "attention" or "left" not in question.text:  # see the overfitting test
            assert first[0]["answer"] == question.answers[0]
        assert [set(r) for r in first] == [{"answer", "score"}] * 3
        assert first[0]["score"] >= first[1]["score"] >= first[2]["score"]
    prediction = loaded.predict(record.path, record.questions[0].text)
    if fusion == "attention":
        h, w = loaded.model.grid_shape()
        assert prediction.attention.shape == (2, h, w)
        np.testing.assert_allclose(prediction.attention.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    else:
        assert prediction.attention is None
