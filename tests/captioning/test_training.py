"""The tiny shapes run: real COCO JSON through pycocotools, real Lite0 features, real fit()."""

import csv

import pytest
import torch

from captioning.api import Captioner, caption_dataset
from captioning.data import CaptionDataset, references
from captioning.model import CaptionModel
from captioning.training import CaptionTask, fit

from ..conftest import IMAGE_SIZE, tiny_config, tiny_train_config


def test_loss_goes_down_and_greedy_captions_match_the_references(trained):
    ckpt, state, records, vocab, model = trained
    losses = [row["train_ce"] for row in state.history]
    assert losses[-1] < 0.25 * losses[0]
    ds = CaptionDataset(records, vocab, IMAGE_SIZE)
    caps = caption_dataset(model, vocab, ds, beam_size=1)
    refs = references(records)
    hits = sum(caps[i] in refs[i] for i in refs)
    assert hits / len(refs) >= 0.9, caps
    assert state.best >= state.history[0]["val_CIDEr"]


def test_log_and_checkpoints_are_written(trained):
    ckpt, state, *_ = trained
    out = ckpt.parent
    assert (out / "best.safetensors").exists() and (out / "last.safetensors").exists() and (out / "last.state.pt").exists()
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == len(state.history) and {"train_loss", "val_CIDEr", "val_Bleu_4", "lr"} <= set(rows[0])


def test_save_reload_captions_identically(trained, shapes):
    ckpt, _, records, vocab, model = trained
    captioner = Captioner.from_pretrained(ckpt)
    paths = [r.path for r in records[:6]]
    again = Captioner.from_pretrained(ckpt)(paths, beam_size=3)
    first = captioner(paths, beam_size=3)
    assert [r.caption for r in first] == [r.caption for r in again]
    assert [r.score for r in first] == [r.score for r in again]
    assert captioner.extra["trained_on"] == "test shapes"


def _run(records, vocab, out, epochs, resume=None):
    torch.manual_seed(123)  # the model's init; fit() seeds everything after that itself
    model = CaptionModel(tiny_config(len(vocab), dropout=0.3))
    ds = CaptionDataset(records[:12], vocab, IMAGE_SIZE)
    cfg = tiny_train_config(epochs=epochs, augment=0.5)
    task = CaptionTask(model, vocab, ds, None, {}, cfg)
    return fit(task, cfg, out, resume=resume)


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(shapes, tmp_path):
    records, vocab, *_ = shapes
    straight = _run(records, vocab, tmp_path / "a", epochs=3)
    _run(records, vocab, tmp_path / "b", epochs=1)
    resumed = _run(records, vocab, tmp_path / "b", epochs=3, resume=tmp_path / "b" / "last.safetensors")
    a = [row["train_loss"] for row in straight.history]
    b = [row["train_loss"] for row in resumed.history]
    assert len(b) == 3
    assert a == pytest.approx(b, rel=1e-5)
