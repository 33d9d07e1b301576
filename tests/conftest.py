"""Shared fixtures: a tiny shapes dataset in COCO format and a tiny captioner trained on it."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from captioning.core.encoders import EncoderConfig
from captioning.core.trainer import fit
from captioning.core.vocab import Vocabulary
from captioning.data import CaptionDataset, load_coco_captions, references
from captioning.decoder import DecoderConfig
from captioning.model import CaptionConfig, CaptionModel
from captioning.training import CaptionTask, CaptionTrainConfig

from .shapes import make_caption_dataset

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """scripts/NAME.py as a module, so a test calls its get_args_parser and main in process."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

IMAGE_SIZE = 96  # efficientnet_lite0 at 96 px: a 3 x 3 grid


def tiny_config(vocab_size: int, **decoder) -> CaptionConfig:
    dec = dict(vocab_size=vocab_size, embed_dim=32, hidden_dim=64, attention_dim=32, dropout=0.0, max_length=8)
    dec.update(decoder)
    return CaptionConfig(EncoderConfig("efficientnet_lite0", IMAGE_SIZE), DecoderConfig(**dec))


def tiny_train_config(**kw) -> CaptionTrainConfig:
    """fp32 unless asked (amp=True): resume and DDP tests compare runs to float rounding, which
    bf16 rounding would swamp. The trained fixture takes the default path (bf16 where native)."""
    base = dict(epochs=1, batch_size=6, lr=3e-3, num_workers=0, progress=False, device="cpu", val_beam_size=1,
                amp=False)
    base.update(kw)
    return CaptionTrainConfig(**base)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """(records, vocab) of an 18-image COCO-format shapes dataset read through pycocotools."""
    root = tmp_path_factory.mktemp("shapes")
    ann, img_dir = make_caption_dataset(root, n_images=18)
    records = load_coco_captions(ann, img_dir)
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    return records, vocab, ann, img_dir


@pytest.fixture(scope="session")
def trained(shapes, tmp_path_factory):
    """A tiny captioner trained on the shapes until it reproduces them; (checkpoint, state, records, vocab).
    Trained as users train, with ``amp`` on: in bf16 on a CPU or GPU that has it natively."""
    records, vocab, _, _ = shapes
    torch.manual_seed(0)
    model = CaptionModel(tiny_config(len(vocab)))
    ds = CaptionDataset(records, vocab, IMAGE_SIZE)
    task = CaptionTask(model, vocab, ds, ds, references(records), tiny_train_config(epochs=40, amp=True),
                       trained_on="test shapes")
    out = tmp_path_factory.mktemp("run")
    state = fit(task, task.cfg, out)
    return out / "best.safetensors", state, records, vocab, model


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory):
    """Files the CLIs must refuse in one line: not an image, a truncated PNG, a decompression bomb."""
    d = tmp_path_factory.mktemp("bad")
    (d / "text.jpg").write_text("this is not an image")
    good = d / "good.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    data = good.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    # A PNG that claims to be 100000 x 100000: refused before decoding.
    raw = bytearray(data)
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4: ihdr + 12] = struct.pack(">II", 100_000, 100_000)
    raw[ihdr + 17: ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr: ihdr + 17])))
    (d / "bomb.png").write_bytes(bytes(raw))
    return d


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the explorer's tests (tests/browser.py); skipped only where
    Chromium is not installed."""
    from .browser import quit_chromium, start_chromium

    driver = start_chromium()
    yield driver
    quit_chromium(driver)
