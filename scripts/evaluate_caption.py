"""Caption a split with a checkpoint and score it with the official coco-caption toolkit,
or score an existing COCO results file.

    # caption + score (writes the COCO results file [{"image_id", "caption"}])
    python scripts/evaluate_caption.py --captions captions_val2014.json --images val2014/ \
        --checkpoint runs/coco/best.safetensors --beam-size 3 --results-out results.json
    python scripts/evaluate_caption.py --karpathy-split dataset_coco.json --images COCO_ROOT --split test ...
    # score a results file someone else produced
    python scripts/evaluate_caption.py --captions captions_val2014.json --results results.json --json
"""

from __future__ import annotations

import argparse
import json
import sys

from captioning.api import DEFAULT_CAPTION_CHECKPOINT, load_caption_model
from captioning.core.checkpoint import resolve_checkpoint
from captioning.core.commandline import (
    add_precision_arg,
    add_skip_bad_images_arg,
    announce_default,
    device_from_arg,
    positive_int,
    run,
    without_unreadable,
)
from captioning.core.errors import UserError
from captioning.core.fileio import write_json
from captioning.core.grounding import flat_scores, ground_captions, load_instances
from captioning.data import CaptionDataset, load_coco_captions, load_karpathy_split, references
from captioning.decoder import HARD_DECODES
from captioning.evaluation import caption_dataset, exact_match, score_captions, score_results_file

PROG = "evaluate_caption"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", help="ground-truth captions, COCO format")
    p.add_argument("--karpathy-split", help="Karpathy's dataset_coco.json (with --split)")
    p.add_argument("--split", default="test", help="Karpathy split to caption: train, val or test (default test)")
    p.add_argument("--images", help="image folder (to caption with --checkpoint)")
    p.add_argument("--results", help="score this COCO results file instead of captioning")
    p.add_argument("--checkpoint", help="caption checkpoint (default: the shipped one)")
    p.add_argument("--beam-size", type=positive_int, default=3, help="1 = greedy (default 3)")
    p.add_argument("--max-length", type=positive_int, default=None)
    p.add_argument("--hard-decode", choices=HARD_DECODES, help="a hard-attention decoder's context at inference: "
                   "expect (the soft alpha's expectation) or argmax (the most likely cell); default: the checkpoint's")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    add_precision_arg(p, default="fp32")
    p.add_argument("--results-out", help="where to write the generated results file")
    p.add_argument("--instances", help="COCO instances of the same images (e.g. instances_test.json of "
                   "scripts/prepare_scenes.py): also score the attention of each generated word that names an "
                   "object in the picture against its box (attention correctness, pointing game; and a uniform map's)")
    p.add_argument("--spice", action="store_true", help="also compute SPICE (downloads Stanford CoreNLP at first use)")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (its JVM takes seconds to start)")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by the toolkit's metric names")
    p.add_argument("--allow-partial", action="store_true", help="with --results: score a file that captions only "
                   "some of the annotated images, on those (otherwise refused)")
    add_skip_bad_images_arg(p)
    return p


def generate_results(args, attention: dict | None = None) -> tuple[list[dict], dict[int, list[str]]]:
    if args.karpathy_split:
        records = load_karpathy_split(args.karpathy_split, args.images, args.split)
    elif args.captions:
        records = load_coco_captions(args.captions, args.images)
    else:
        raise UserError("give --captions GT.json or --karpathy-split dataset_coco.json")
    records = without_unreadable(PROG, records, args.skip_bad_images)
    path, is_default = resolve_checkpoint(args.checkpoint, DEFAULT_CAPTION_CHECKPOINT)
    model, vocab, extra = load_caption_model(path, device_from_arg(args.device))
    if is_default:
        announce_default(PROG, path, extra)
    if args.hard_decode:
        model.decoder.cfg.hard_decode = args.hard_decode
    dataset = CaptionDataset(records, vocab, model.image_size)
    caps = caption_dataset(model, vocab, dataset, args.beam_size, args.batch_size, device_from_arg(args.device),
                           max_length=args.max_length, precision=args.precision, attention=attention)
    results = [{"image_id": i, "caption": c} for i, c in caps.items()]
    if args.results_out:
        write_json(args.results_out, results)
    return results, references(records)


def main(args) -> int:
    kw = {"spice": args.spice, "meteor": not args.no_meteor}
    if args.results:
        if args.instances:
            raise UserError("--instances scores the attention of captions made here: leave out --results")
        if not args.captions:
            raise UserError("--results needs --captions GT.json to score against")
        scores = score_results_file(args.captions, args.results, allow_partial=args.allow_partial, **kw)
    else:
        if not args.images:
            raise UserError("give --images DIR to caption (or --results RES.json to score a results file)")
        instances = load_instances(args.instances) if args.instances else None  # a bad file fails before captioning
        attention = {} if instances else None
        results, refs = generate_results(args, attention)
        cands = {r["image_id"]: r["caption"] for r in results}
        scores = score_captions(refs, cands, **kw)
        scores["exact_match"] = exact_match(refs, cands)
        if instances:
            scores.update(flat_scores(ground_captions(instances, attention)))
    if args.json:
        print(json.dumps(scores))
    else:
        for k, v in scores.items():
            print(f"{k:12s} {v:.4f}")
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run(PROG, lambda: main(parsed)))
