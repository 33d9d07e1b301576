"""Leave-styles-out study: train the captioner on k emoji styles, name emoji drawn in styles it never saw.

    python scripts/styles_study.py --data data/emoji_all --cache runs/styles_cache --out runs/styles_study \
        --run google --run google,twitter --run google,twitter,fluentflat,notovl ... \
        --test openmoji,fluent3d --samples 20000

Cheap by design: the CNN (EfficientNet-Lite0, ImageNet weights, frozen) encodes every image of
``--data`` once into one feature cache shared by all runs; each run trains only the decoder, on
the ``train`` split of its styles, for the same number of training captions (``--samples``:
epochs = samples / images, rounded up), so runs differ in the styles seen, not in the amount of
training. Each run is then scored greedily (exact match) on the ``--test`` styles' renderings of
concepts it trained on (their ``train``-split images: never seen by a run that does not train
on that style) and on ``test_style`` (Apple). Results append to ``OUT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from captioning.api import caption_dataset
from captioning.core.commandline import run
from captioning.core.data import ImageFiles
from captioning.core.encoders import EncoderConfig
from captioning.core.feature_cache import cached_source, weights_digest
from captioning.core.trainer import fit
from captioning.core.vocab import Vocabulary
from captioning.data import CaptionDataset, load_coco_captions, references
from captioning.datasets.emoji import VENDOR_IDS, check_vendors
from captioning.decoder import DecoderConfig
from captioning.evaluation import exact_match
from captioning.model import CaptionConfig, CaptionModel
from captioning.training import CaptionTask, CaptionTrainConfig

VENDOR_OF_ID = {n: v for v, n in VENDOR_IDS.items()}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="prepare_emoji.py output with the styles (images/, captions_*.json)")
    p.add_argument("--cache", required=True, help="folder of the shared feature cache")
    p.add_argument("--out", required=True, help="folder of the runs and results.jsonl")
    p.add_argument("--run", action="append", required=True, help="comma-separated training styles of one run (repeatable)")
    p.add_argument("--test", default="openmoji,fluent3d", help="styles scored as unseen when a run does not train on them")
    p.add_argument("--samples", type=int, default=20000, help="training captions per run (the fixed budget)")
    p.add_argument("--image-size", type=int, default=160, help="CNN input side (160: a 5x5 grid)")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop a run's training after this long (0: no cap)")
    p.add_argument("--base-only", action="store_true", help="leave out the skin-tone variants (about half the images)")
    p.add_argument("--lr", type=float, default=8e-4, help="decoder learning rate (Adam)")
    p.add_argument("--seed", type=int, default=0)
    return p


class Subset:
    """Images ``indices`` of an image source (here: the shared feature cache)."""

    def __init__(self, source, indices: list[int]):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.source[self.indices[i]]


def vendor(record) -> str:
    return VENDOR_OF_ID[record.image_id // 100_000]


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("styles_study", lambda: study(args))


def study(args) -> int:
    data, out = Path(args.data), Path(args.out)
    splits = {s: load_coco_captions(data / f"captions_{s}.json", data / "images") for s in ("train", "val", "test_style")}
    if args.base_only:
        splits = {s: [r for r in recs if "skin tone" not in r.captions[0]] for s, recs in splits.items()}
    records = [r for s in ("train", "val", "test_style") for r in splits[s]]
    index = {r.image_id: i for i, r in enumerate(records)}
    # One vocabulary for every run (the names of all training captions): runs differ only in images.
    vocab = Vocabulary.build((c for r in splits["train"] for c in r.captions), 1)
    enc = EncoderConfig("efficientnet_lite0", args.image_size, fine_tune_blocks=0, in_checkpoint=False)
    dec = DecoderConfig(vocab_size=len(vocab), feature_dim=1280, embed_dim=256, hidden_dim=384, attention_dim=256)
    probe = CaptionModel(CaptionConfig(enc, dec))
    describe = {"files": [str(r.path) for r in records], "encoder": asdict(enc), "size": args.image_size,
                "weights": weights_digest(probe.encoder)}
    t0 = time.time()
    features = cached_source(probe.encoder, ImageFiles([r.path for r in records], args.image_size), args.cache, "all", describe, train=False)
    print(f"features of {len(records)} images: {time.time() - t0:.0f} s", file=sys.stderr)
    tests = check_vendors(args.test.split(",")) if args.test else []

    for spec in args.run:
        styles = check_vendors(spec.split(","))
        name = "+".join(styles)
        train = [r for r in splits["train"] if vendor(r) in styles]
        val = [r for r in splits["val"] if vendor(r) in styles]
        cfg = CaptionTrainConfig(epochs=math.ceil(args.samples / len(train)), batch_size=32, lr=args.lr, num_workers=0,
                                 progress=False, max_minutes=args.max_minutes, seed=args.seed, early_stop=100)
        model = CaptionModel(CaptionConfig(enc, dec))
        def ds(recs, max_length=cfg.max_caption_length):
            return CaptionDataset(recs, vocab, args.image_size, max_length, images=Subset(features, [index[r.image_id] for r in recs]))
        task = CaptionTask(model, vocab, ds(train), ds(val), references(val), cfg, trained_on=name)
        t0 = time.time()
        fit(task, cfg, out / name)
        seconds = time.time() - t0
        concepts = {r.captions[0] for r in train}  # names seen in training, any style
        scores = {}
        for test in tests + ["apple"]:
            if test in styles:
                continue
            recs = splits["test_style"] if test == "apple" else [r for r in splits["train"] if vendor(r) == test]
            recs = [r for r in recs if r.captions[0] in concepts]
            cands = caption_dataset(model, vocab, ds(recs), beam_size=1, batch_size=64)
            scores[test] = {"images": len(recs), "exact_match": exact_match(references(recs), cands)}
        row = {"styles": styles, "k": len(styles), "train_images": len(train), "epochs": cfg.epochs,
               "seconds": round(seconds), "unseen": scores}
        print(json.dumps(row), flush=True)
        with open(out / "results.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
