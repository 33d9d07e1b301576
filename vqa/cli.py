"""``vqa IMAGE QUESTION``: print the best answers with their probabilities.

The CLI only parses and prints; the work is ``vqa.api.VQAModel``. A user's mistake (missing
or corrupt image, empty question, unreadable checkpoint) is one line on stderr and exit
code 2. A question longer than the model reads is cut, with a one-line warning on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from captioning.core.commandline import (
    add_precision_arg,
    announce_default,
    check_report_path,
    error,
    map_paths,
    positive_int,
    run,
)
from captioning.core.errors import UserError

PROG = "vqa"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Answer a question about an image (VQA: LSTM question "
                                "encoder, CNN grid, concat / mul / attention fusion).")
    p.add_argument("image", help="an image file (JPEG, PNG, ...) or an http(s) URL")
    p.add_argument("question", help='the question, e.g. "what color is the shape?"')
    p.add_argument("--checkpoint", help="a VQA checkpoint (.safetensors) or a training output folder (its "
                   "best.safetensors, else last.safetensors); default: the shipped one")
    p.add_argument("--top-k", type=positive_int, default=5, help="how many answers to print (default 5)")
    p.add_argument("--choices", metavar='"a|b|c"', help="answer among these candidates only (multiple choice)")
    p.add_argument("--attention-map", metavar="OUT.png", help="draw each attention glimpse over the image "
                   "(.png, .jpg, .pdf or .svg; models with attention fusion only, others warn and answer)")
    p.add_argument("--html", metavar="REPORT.html", help="write an interactive explorer: the question, the answers "
                   "and the attention glimpses over the image (one self-contained file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_precision_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return run(PROG, lambda: _answer(args))


def _answer(args) -> int:
    if not args.question.strip():
        raise UserError("the question is empty")
    if args.attention_map:
        map_paths(args.attention_map, 1)  # a format and folder that cannot be written: refused before any work
    if args.html:
        check_report_path(args.html)

    from captioning.core.commandline import device_from_arg
    from captioning.core.images import prepare_image
    from vqa.api import ATTENTION_VQA_CHECKPOINT, VQAModel, parse_choices

    choices = parse_choices(args.choices)
    device = device_from_arg(args.device)
    vqa = VQAModel.from_pretrained(args.checkpoint, device=device, precision=args.precision)
    path = vqa.checkpoint
    if vqa.is_default:
        announce_default(PROG, path, vqa.extra)
    draw = bool(args.attention_map)
    if draw and not vqa.model.has_attention:
        print(f"{PROG}: warning: --attention-map: {path.name} uses {vqa.model.cfg.fusion.name!r} fusion, which has "
              "no attention to draw (use one trained with --fusion attention, such as the shipped "
              f"--checkpoint {ATTENTION_VQA_CHECKPOINT}); answering without a map", file=sys.stderr)
        draw = False
    image = prepare_image(args.image, vqa.model.image_size, keep_display=draw or bool(args.html))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        prediction = vqa.predict(image, args.question, top_k=args.top_k, choices=choices)
    for message in prediction.warnings:  # ours, decided by VQAModel.predict: one line each, no file:line
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    for w in caught:  # anyone else's, as Python shows them
        if w.category.__module__ != "vqa.api":
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    if args.json:
        print(json.dumps({"image": args.image, **prediction.to_json()}))
    else:
        width = max(len(a["answer"]) for a in prediction.answers)
        for a in prediction.answers:
            print(f"{a['answer']:<{width}}  {a['score']:.4f}")
    if args.html:
        from captioning.core.report import vqa_item, write_report

        item = vqa_item(image.display, args.image, prediction.question, prediction.answers, prediction.attention,
                        prediction.warnings)
        write_report(args.html, [item], "Visual question answering: where the model looked")
    if draw:
        return _save_map(image.display, prediction, args.attention_map)
    return 0


def _save_map(image, prediction, out: str) -> int:
    from captioning.core.visualize import save_attention_map

    glimpses = [f"glimpse {g + 1}" for g in range(len(prediction.attention))]
    title = f"{prediction.question} -> {prediction.answers[0]['answer']}"
    try:
        save_attention_map(image, glimpses, prediction.attention, out, title=title)
    except OSError as e:
        error(PROG, f"{out}: cannot write the attention map ({e.strerror or e})")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
