"""Score caption checkpoints that share one frozen encoder (decoder variants trained from the
same cached features) on several splits, encoding each split's images once: greedy and beam
search, exact match and CIDEr, the attention's mean max alpha, parameters. It makes the
table of docs/decoders.md.

    python scripts/compare_decoders.py --images data/emoji/images \
        --split val=data/emoji/captions_val.json --split test_concept=data/emoji/captions_test_concept.json \
        --checkpoint soft=runs/lstm1soft/best.safetensors --checkpoint hard=runs/lstm1hard/best.safetensors \
        --beam-size 1 --beam-size 3 --out variants.json

A hard-attention checkpoint is scored with both its decodings (expect, argmax).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from captioning.api import load_caption_model
from captioning.core.commandline import run
from captioning.core.data import inference_batches
from captioning.core.errors import UserError
from captioning.core.fileio import write_json
from captioning.data import CaptionDataset, collate_captions, load_coco_captions, references
from captioning.evaluation import exact_match, score_captions
from captioning.search import beam_search, greedy


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="image folder of every split")
    p.add_argument("--split", action="append", required=True, metavar="NAME=CAPTIONS.json")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=CKPT")
    p.add_argument("--beam-size", action="append", type=int, help="1 = greedy (default: 1 and 3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-images", type=int, default=0, help="score at most N images of a split, evenly spaced "
                   "(every k-th); 0 = all")
    p.add_argument("--out", help="write the scores here as JSON")
    return p


def named(items: list[str]) -> dict[str, str]:
    if any("=" not in item for item in items):
        raise UserError(f"expected NAME=PATH, got {next(i for i in items if '=' not in i)!r}")
    return dict(item.split("=", 1) for item in items)


@torch.no_grad()
def encode_split(model, records, vocab, batch_size: int) -> list[torch.Tensor]:
    """The frozen encoder's grids (B, P, C) of every image, in batches, in record order."""
    dataset = CaptionDataset(records, vocab, model.image_size)
    return [model.encode(batch.images) for batch in inference_batches(dataset, collate_captions, batch_size)]


@torch.no_grad()
def score(model, vocab, grids: list[torch.Tensor], records, beam_size: int) -> dict[str, float]:
    model.eval()
    max_length = model.cfg.decoder.max_length
    hyps = []
    for features in grids:
        hyps += greedy(model.decoder, features, max_length) if beam_size == 1 else \
            beam_search(model.decoder, features, beam_size, max_length)
    cands = {r.image_id: vocab.decode(h.tokens) for r, h in zip(records, hyps)}
    refs = references(records)
    scores = score_captions(refs, cands, meteor=False)
    alphas = torch.cat([h.alphas for h in hyps if len(h.tokens)])  # (words, P)
    return {"exact_match": exact_match(refs, cands), "CIDEr": scores["CIDEr"], "Bleu_4": scores["Bleu_4"],
            "mean_max_alpha": float(alphas.max(-1).values.mean())}


def main(args) -> int:
    torch.set_grad_enabled(False)
    checkpoints = {name: load_caption_model(path) for name, path in named(args.checkpoint).items()}
    encoders = {json.dumps(m.cfg.encoder.__dict__, sort_keys=True) for m, _, _ in checkpoints.values()}
    if len(encoders) != 1 or any(m.cfg.encoder.fine_tune_blocks for m, _, _ in checkpoints.values()):
        raise UserError("the checkpoints must share one frozen encoder (same config, no fine-tuned blocks)")
    first, first_vocab, _ = next(iter(checkpoints.values()))
    results = {}
    for split, path in named(args.split).items():
        records = load_coco_captions(path, args.images)
        if args.max_images and len(records) > args.max_images:
            records = records[::-(-len(records) // args.max_images)]
        grids = encode_split(first, records, first_vocab, args.batch_size)
        for name, (model, vocab, _) in checkpoints.items():
            decodes = ("expect", "argmax") if model.cfg.decoder.attention == "hard" else (None,)
            for decode in decodes:
                if decode:
                    model.decoder.cfg.hard_decode = decode
                key = name + (f"/{decode}" if decode else "")
                row = results.setdefault(key, {"parameters": sum(p.numel() for p in model.decoder.parameters())})
                for k in args.beam_size or [1, 3]:
                    row[f"{split}/beam{k}"] = score(model, vocab, grids, records, k)
                print(key, split, json.dumps({k: v for k, v in row.items() if k.startswith(split)}), file=sys.stderr)
    if args.out:
        write_json(args.out, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("compare_decoders", lambda: main(parsed)))
