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
from typing import Sequence

from captioning.core.commandline import add_precision_arg, announce_default, device_from_arg, error, positive_int, run
from captioning.core.errors import UserError

PROG = "vqa"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Answer a question about an image (VQA: LSTM question "
                                "encoder, CNN grid, concat / mul / attention fusion).")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("question", help='the question, e.g. "what color is the shape?"')
    p.add_argument("--checkpoint", help="a VQA checkpoint (.safetensors); default: the shipped one")
    p.add_argument("--top-k", type=positive_int, default=5, help="how many answers to print (default 5)")
    p.add_argument("--choices", metavar='"a|b|c"', help="answer among these candidates only (multiple choice)")
    p.add_argument("--attention-map", metavar="OUT.png", help="draw each attention glimpse over the image "
                   "(attention fusion only)")
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
    from captioning.core.checkpoint import resolve_checkpoint
    from captioning.core.images import load_image

    from vqa.api import DEFAULT_VQA_CHECKPOINT, QuestionTruncatedWarning, UnknownChoiceWarning, VQAModel

    if not args.question.strip():
        raise UserError("the question is empty")
    choices = args.choices.split("|") if args.choices is not None else None
    device = device_from_arg(args.device)
    image = load_image(args.image)
    path, is_default = resolve_checkpoint(args.checkpoint, DEFAULT_VQA_CHECKPOINT)
    vqa = VQAModel.from_pretrained(path, device=device, precision=args.precision)
    if is_default:
        announce_default(PROG, path, vqa.extra)
    if args.attention_map and not vqa.model.has_attention:
        raise UserError(f"--attention-map needs a model with attention fusion; "
                        f"{path.name} uses {vqa.model.cfg.fusion.name!r} fusion, which has no attention")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QuestionTruncatedWarning)
        warnings.simplefilter("always", UnknownChoiceWarning)
        prediction = vqa.predict(image, args.question, top_k=args.top_k, choices=choices)
    for w in caught:
        if issubclass(w.category, (QuestionTruncatedWarning, UnknownChoiceWarning)):  # ours: one line, no file:line
            print(f"{PROG}: warning: {str(w.message).splitlines()[0]}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    if args.json:
        print(json.dumps({"image": args.image, **prediction.to_json()}))
    else:
        width = max(len(a["answer"]) for a in prediction.answers)
        for a in prediction.answers:
            print(f"{a['answer']:<{width}}  {a['score']:.4f}")
    if args.html:
        from captioning.core.report import vqa_item, write_report

        item = vqa_item(image, args.image, prediction.question, prediction.answers, prediction.attention)
        write_report(args.html, [item], "Visual question answering: where the model looked")
    if args.attention_map:
        return _save_map(image, prediction, args.attention_map)
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
