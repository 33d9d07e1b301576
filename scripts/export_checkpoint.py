"""Copy a training checkpoint into a shippable one: fp16 weights, and the measured metrics and
the commands that reproduce them recorded in its metadata (shown by ``--show``).

    python scripts/export_checkpoint.py runs/emoji/best.safetensors checkpoints/caption_emoji.safetensors \
        --fp16 --metrics runs/emoji_eval/metrics.json --note "evaluate with: ..."
    python scripts/export_checkpoint.py checkpoints/caption_emoji.safetensors --show
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from captioning.core.checkpoint import read_checkpoint, write_checkpoint
from captioning.core.commandline import run
from captioning.core.fileio import read_json


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a checkpoint (.safetensors)")
    p.add_argument("dest", nargs="?", help="where to write the exported copy")
    p.add_argument("--fp16", action="store_true", help="store floating-point weights as fp16 (half the size)")
    p.add_argument("--metrics", help="a JSON file of measured results to record under extra['results']")
    p.add_argument("--note", action="append", default=[], help="free text recorded under extra['notes'] (repeatable)")
    p.add_argument("--trained-on", help="what the weights were trained on, in words (extra['trained_on'], which "
                   "the CLIs print when the checkpoint answers as a default); replaces the recorded one")
    p.add_argument("--show", action="store_true", help="print the checkpoint's metadata and exit")
    return p


def main(args) -> int:
    ckpt = read_checkpoint(args.source)
    if args.show or not args.dest:
        print(json.dumps({"kind": ckpt.kind, "config": ckpt.config, "extra": ckpt.extra,
                          "tensors": len(ckpt.state_dict)}, indent=2))
        return 0
    if args.metrics:
        ckpt.extra["results"] = read_json(args.metrics, "metrics file")
    if args.note:
        ckpt.extra["notes"] = args.note
    if args.trained_on:
        ckpt.extra["trained_on"] = args.trained_on
    write_checkpoint(args.dest, ckpt, torch.float16 if args.fp16 else None)
    return 0


if __name__ == "__main__":
    parsed = get_args_parser().parse_args()
    sys.exit(run("export_checkpoint", lambda: main(parsed)))
