"""``caption IMAGE [IMAGE ...]``: print a caption per image, optionally draw where it looked.

The CLI only parses and prints; the work is ``captioning.api.Captioner``. A user's mistake
(missing or corrupt image, bad checkpoint) is one line on stderr and exit code 2; the good
images of the same call are still captioned. The helpers here are shared with ``vqa.cli``.
"""

from __future__ import annotations

from captioning.core.commandline import add_precision_arg, announce_default, device_from_arg, error, map_paths, positive_int, run

import argparse
import json
import sys
from typing import Sequence


from captioning.core.errors import UserError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="caption", description="Caption images with a soft-attention LSTM (Show, Attend and Tell).")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--checkpoint", help="a caption checkpoint (.safetensors); default: the shipped one")
    p.add_argument("--beam-size", type=positive_int, default=3, help="beam width; 1 = greedy (default 3)")
    p.add_argument("--max-length", type=positive_int, default=None, help="longest caption in words (default: the model's)")
    p.add_argument("--attention-map", metavar="OUT.png", help="draw the attention of every word; with several images, OUT-1.png, OUT-2.png, ...")
    p.add_argument("--html", metavar="REPORT.html", help="write an interactive attention explorer of all the images "
                   "(one self-contained file: words, their probabilities, beam alternatives, attention maps)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_precision_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return run("caption", lambda: _caption(args))


def _caption(args) -> int:
    from captioning.api import DEFAULT_CAPTION_CHECKPOINT, Captioner
    from captioning.core.checkpoint import resolve_checkpoint
    from captioning.core.images import load_image

    device = device_from_arg(args.device)
    path, is_default = resolve_checkpoint(args.checkpoint, DEFAULT_CAPTION_CHECKPOINT)
    captioner = Captioner.from_pretrained(path, device=device, precision=args.precision)
    if is_default:
        announce_default("caption", path, captioner.extra)

    status = 0
    good = []
    for index, name in enumerate(args.images):
        try:
            good.append((index, name, load_image(name)))
        except UserError as e:
            error("caption", str(e))
            status = 2
    maps = map_paths(args.attention_map, len(args.images)) if args.attention_map else None
    results = captioner([im for _, _, im in good], beam_size=args.beam_size, max_length=args.max_length) if good else []
    report = []
    for (index, name, im), result in zip(good, results):
        result.image = name
        print(json.dumps(result.to_json()) if args.json else f"{name}: {result.caption}", flush=True)
        if maps:
            from captioning.core.visualize import save_attention_map

            out = maps[index]
            try:
                save_attention_map(im, result.tokens, result.attention, out, title=result.caption)
            except OSError as e:
                error("caption", f"{out}: cannot write the attention map ({e.strerror or e})")
                status = 2
        if args.html:
            report.append(captioner.report_item(im, result, name))
    if args.html:
        from captioning.core.report import write_report

        write_report(args.html, report, "Captions: where the model looked")
    return status


if __name__ == "__main__":
    sys.exit(main())
