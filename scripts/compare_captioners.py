"""Score caption checkpoints on several splits, greedy and beam search, from cached CNN features.

    python scripts/compare_captioners.py --images data/emoji_all/images --cache runs/eval_cache \
        --checkpoint checkpoints/caption_emoji.safetensors --checkpoint runs/new/best.safetensors \
        --captions data/emoji/captions_val.json --captions data/emoji/captions_test_style.json --beam 1 --beam 3

Each split's images are encoded once per distinct CNN (the cache is keyed on the encoder's
weights, so checkpoints that share a frozen CNN share the features) and captioned by every
checkpoint with every beam size: the same numbers as ``evaluate_caption.py`` (exact match and
the coco-caption toolkit's BLEU, ROUGE-L, CIDEr; METEOR left out for speed) at a fraction of
the CNN time. One JSON line per (checkpoint, split, beam) on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from captioning.api import caption_dataset, load_caption_model
from captioning.core.commandline import run
from captioning.core.data import ImageFiles
from captioning.core.feature_cache import cached_source, weights_digest
from captioning.data import CaptionDataset, load_coco_captions, references
from captioning.evaluation import exact_match, score_captions


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="image folder of the caption files")
    p.add_argument("--cache", required=True, help="feature cache folder")
    p.add_argument("--checkpoint", action="append", required=True, help="caption checkpoint (repeatable)")
    p.add_argument("--captions", action="append", required=True, help="COCO caption file of one split (repeatable)")
    p.add_argument("--beam", action="append", type=int, default=None, help="beam size (repeatable; 1 = greedy; default 1 and 3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("compare_captioners", lambda: compare(args))


def compare(args) -> int:
    beams = args.beam or [1, 3]
    models = [(path, *load_caption_model(path)[:2]) for path in args.checkpoint]
    for captions in args.captions:
        records = load_coco_captions(captions, args.images)
        refs = references(records)
        for path, model, vocab in models:
            size = model.image_size
            describe = {"files": [str(r.path) for r in records], "encoder": asdict(model.cfg.encoder), "size": size,
                        "weights": weights_digest(model.encoder)}
            features = cached_source(model.encoder, ImageFiles([r.path for r in records], size), args.cache,
                                     Path(captions).stem, describe, train=False)
            dataset = CaptionDataset(records, vocab, size, images=features)
            for beam in beams:
                cands = caption_dataset(model, vocab, dataset, beam_size=beam, batch_size=64)
                scores = score_captions(refs, cands, meteor=False)
                row = {"checkpoint": path, "split": Path(captions).stem, "beam": beam, "images": len(cands),
                       "exact_match": exact_match(refs, cands), **scores}
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
