"""One process of the 2-process DDP test (tests/captioning/test_distributed.py), launched as

    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.captioning.ddp_worker \
        ANNOTATIONS IMAGES OUT BATCH

It first opens a feature cache on both ranks, then trains the tiny captioner three times with ``fit`` under DDP (gloo, CPU): ``straight``
(2 epochs, with validation on rank 0), and ``a`` (2 epochs) against ``b`` (1 epoch, then
resumed to 2) with dropout and augmentation on, so that resuming must restore every
process's RNG; then ``scst``: one cross-entropy epoch and one of self-critical training; then ``ft``: one epoch with
the CNN's last block fine-tuned; then ``hard``: a 2-layer GRU decoder with hard attention. Each rank writes its final weights and its history for the test to compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from captioning.core import feature_cache as features
from captioning.core.data import ImageFiles
from captioning.core.distributed import cleanup_distributed, setup_distributed
from captioning.core.trainer import fit
from captioning.core.vocab import Vocabulary
from captioning.data import CaptionDataset, load_coco_captions, references
from captioning.model import CaptionModel
from captioning.training import CaptionTask

from ..conftest import IMAGE_SIZE, tiny_config, tiny_train_config


def train(records, vocab, out: Path, batch: int, epochs: int, validate: bool, dropout: float, augment: float,
          resume: Path | None = None, fine_tune: int = 0, decoder: dict | None = None, **scst):
    torch.manual_seed(123)  # the model's init; fit() seeds everything after it
    config = tiny_config(len(vocab), dropout=dropout, **(decoder or {}))
    config.encoder.fine_tune_blocks = fine_tune
    model = CaptionModel(config)
    train_set = CaptionDataset(records[:12], vocab, IMAGE_SIZE)
    val_set = CaptionDataset(records[12:16], vocab, IMAGE_SIZE) if validate else None
    cfg = tiny_train_config(epochs=epochs, batch_size=batch, augment=augment, **scst)
    task = CaptionTask(model, vocab, train_set, val_set, references(records[12:16]), cfg)
    return model, fit(task, cfg, out, resume=resume)


def dump(model, state, out: Path, rank: int) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(state.history))


def cache(records, vocab, out: Path, rank: int) -> None:
    """--cache-features under torchrun: one process encodes, every process reads the result."""
    encoded = []
    real = features.cache_features
    features.cache_features = lambda *a, **kw: encoded.append(1) or real(*a, **kw)
    try:
        model = CaptionModel(tiny_config(len(vocab)))
        paths = [r.path for r in records[:4]]
        source = features.cached_source(model.encoder, ImageFiles(paths, IMAGE_SIZE), out, "train",
                                        {"files": [str(p) for p in paths]})
    finally:
        features.cache_features = real
    (out / f"rank{rank}.json").write_text(json.dumps({"encoded": len(encoded), "sum": float(source[3].sum())}))


def main(ann: str, images: str, out: str, batch: str) -> int:
    rank, world = setup_distributed("gloo")
    try:
        records = load_coco_captions(ann, images)
        vocab = Vocabulary.build(c for r in records for c in r.captions)
        out_dir, b = Path(out), int(batch)
        cache(records, vocab, out_dir / "cache", rank)
        model, state = train(records, vocab, out_dir / "straight", b, 2, validate=True, dropout=0.0, augment=0.0)
        dump(model, state, out_dir / "straight", rank)
        model, state = train(records, vocab, out_dir / "a", b, 2, validate=False, dropout=0.3, augment=0.5)
        dump(model, state, out_dir / "a", rank)
        train(records, vocab, out_dir / "b", b, 1, validate=False, dropout=0.3, augment=0.5)
        model, state = train(records, vocab, out_dir / "b", b, 2, validate=False, dropout=0.3, augment=0.5,
                             resume=out_dir / "b" / "last.safetensors")
        dump(model, state, out_dir / "b", rank)
        # Self-critical training (captioning.scst) after one cross-entropy epoch: each process
        # samples its own captions (its own RNG stream), DDP averages the policy gradients.
        model, state = train(records, vocab, out_dir / "scst", b, 2, validate=False, dropout=0.3, augment=0.0,
                             scst=True, scst_from_epoch=1, scst_samples=3, scst_lr=1e-3)
        dump(model, state, out_dir / "scst", rank)
        # The CNN's last block fine-tuned: its gradient comes through the decoder's grid
        # gradient (summed once after the steps), and DDP averages it.
        model, state = train(records, vocab, out_dir / "ft", b, 1, validate=False, dropout=0.3, augment=0.0, fine_tune=1)
        dump(model, state, out_dir / "ft", rank)
        # A stacked GRU with hard attention: each process draws its own cells and its own
        # sample-or-expectation choice; the REINFORCE baseline is a buffer (rank 0's is broadcast).
        model, state = train(records, vocab, out_dir / "hard", b, 2, validate=False, dropout=0.3, augment=0.0,
                             decoder={"cell": "gru", "layers": 2, "attention": "hard"})
        dump(model, state, out_dir / "hard", rank)
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
