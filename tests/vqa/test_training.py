"""vqa.training: a tiny fit() run on the shapes, validated with the official VQA accuracy."""

import csv

import pytest
import torch

from captioning.core.trainer import fit, training_precision
from vqa.api import answer_dataset
from vqa.metric import evaluate
from vqa.model import VQANet
from vqa.training import VQATask, soft_accuracy, vqa_loss

from .conftest import tiny_train_config, tiny_vqa_config


def test_accuracy_goes_up(trained_vqa):
    history = trained_vqa.history
    first, best = history[0], max(history, key=lambda row: row["val_accuracy"])
    assert best["val_accuracy"] >= first["val_accuracy"] + 30, [row["val_accuracy"] for row in history]
    assert best["val_accuracy"] >= 75
    assert history[-1]["train_loss"] < 0.5 * first["train_loss"]
    assert {"val_accuracy_other", "val_accuracy_yes_no", "train_accuracy"} <= set(first)


def test_checkpoints_log_and_validation_agree(trained_vqa, shapes_vqa):
    out = trained_vqa.checkpoint.parent
    assert (out / "best.safetensors").exists() and (out / "last.safetensors").exists()
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == len(trained_vqa.history)
    # The last row's validation is the official metric on answer_dataset's results, at the
    # precision and batch size validation used (bf16 rounding can depend on the batch's size).
    precision = training_precision(tiny_train_config(amp=True), torch.device("cpu"))
    results = answer_dataset(trained_vqa.model, shapes_vqa.answers, shapes_vqa.dataset(shapes_vqa.val), batch_size=32,
                             precision=precision)
    assert len(results) == shapes_vqa.val.num_questions
    overall = evaluate(results, shapes_vqa.val.questions, shapes_vqa.val.annotations)["exact"]["overall"]
    assert overall == pytest.approx(trained_vqa.history[-1]["val_accuracy"])


def test_loss_is_soft_target_binary_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.3, 0.0]])
    expected = -sum(t * torch.log(torch.sigmoid(z)) + (1 - t) * torch.log(1 - torch.sigmoid(z))
                    for z, t in zip(logits[0], targets[0]))
    assert vqa_loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    assert soft_accuracy(logits, targets).item() == 1.0
    assert soft_accuracy(torch.tensor([[0.0, 5.0, 0.0]]), targets).item() == pytest.approx(0.3)


def test_resume_continues_the_same_run(shapes_vqa, tmp_path):
    def run(out, epochs, resume=None):
        torch.manual_seed(1)
        model = VQANet(tiny_vqa_config(len(shapes_vqa.words), len(shapes_vqa.answers), "mul"))
        cfg = tiny_train_config(epochs=epochs, augment=0.5)
        task = VQATask(model, shapes_vqa.words, shapes_vqa.answers, shapes_vqa.dataset(shapes_vqa.train), None,
                       None, cfg)
        return fit(task, cfg, out, resume=resume)

    straight = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    resumed = run(tmp_path / "b", 2, resume=tmp_path / "b" / "last.safetensors")
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in straight.history], rel=1e-5)
