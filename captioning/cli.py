"""``caption IMAGE [IMAGE ...]``: print a caption per image, optionally draw where it looked.

The CLI only parses and prints; the work is ``captioning.api.Captioner``. Images stream
through: each is read and shrunk to the model's input at once, captioned ``--batch-size`` at
a time, and its line printed when its batch is done, so memory stays flat for a folder of
thousands of photos. A user's mistake (missing or corrupt image, bad checkpoint, a beam
wider than the vocabulary) is one line on stderr and exit code 2; the good images of the same
call are still captioned. Nothing heavy (torch, the model) is imported before the arguments
are parsed, so ``--help`` and argument errors are instant. What every command shares (one
line and exit 2 for a user error, ``--precision``, attention-map paths) is
``captioning.core.commandline``.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="caption", description="Caption images with a soft-attention LSTM (Show, Attend and Tell).")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...), folders (their images, sorted), "
                   "glob patterns or http(s) URLs")
    p.add_argument("--checkpoint", help="a caption checkpoint (.safetensors) or a training output folder (its "
                   "best.safetensors, else last.safetensors); default: the shipped one")
    p.add_argument("--beam-size", type=positive_int, default=3, help="beam width, 1 to the vocabulary's size; "
                   "1 = greedy (default 3)")
    p.add_argument("--max-length", type=positive_int, default=None, help="longest caption in words (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images captioned at once; each batch is "
                   "printed when done (default 16)")
    p.add_argument("--attention-map", metavar="OUT.png", help="draw the attention of every word (.png, .jpg, .pdf "
                   "or .svg); with several images, OUT-1.png, OUT-2.png, ...")
    p.add_argument("--html", metavar="REPORT.html", help="write an interactive attention explorer of all the images "
                   "(one self-contained file: words, their probabilities, beam alternatives, attention maps)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image: image, caption, tokens, "
                   "score (the mean log-probability per token, the closing <end> included) and, with a beam, "
                   "alternatives")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_precision_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return run("caption", lambda: _caption(args))


def _caption(args) -> int:
    from captioning.core.images import expand_sources

    names = expand_sources(args.images)
    if not names:
        raise UserError(f"no images in {' '.join(args.images)}")
    maps = map_paths(args.attention_map, len(names)) if args.attention_map else None
    if args.html:
        check_report_path(args.html)

    from captioning.api import Captioner
    from captioning.core.commandline import device_from_arg

    device = device_from_arg(args.device)
    captioner = Captioner.from_pretrained(args.checkpoint, device=device, precision=args.precision)
    if captioner.is_default:
        announce_default("caption", captioner.checkpoint, captioner.extra)

    status = 0
    report = []  # the explorer's items: a small copy of each image and its maps, not the decoded photo
    # The request is refused here (stream checks it), before any image is read.
    results = captioner.stream(names, beam_size=args.beam_size, max_length=args.max_length,
                               batch_size=args.batch_size, keep_display=maps is not None or bool(args.html))
    for index, (name, result) in enumerate(zip(names, results)):
        if isinstance(result, UserError):
            error("caption", str(result))
            status = 2
            continue
        result.image = name
        print(json.dumps(result.to_json()) if args.json else f"{name}: {result.caption}", flush=True)
        if maps and not _save_map(result, maps[index]):
            status = 2
        if args.html:  # a small copy of the image, each word with the probability the search gave it
            report.append(captioner.report_item(result.display, result, name))
    if args.html:
        from captioning.core.report import write_report

        write_report(args.html, report, "Captions: where the model looked")
    return status


def _save_map(result, out) -> bool:
    from captioning.core.visualize import save_attention_map

    try:
        save_attention_map(result.display, result.tokens, result.attention, out, title=result.caption,
                           cells=result.cells)
    except OSError as e:
        error("caption", f"{out}: cannot write the attention map ({e.strerror or e})")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
