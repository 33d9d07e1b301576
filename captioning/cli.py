"""``caption IMAGE [IMAGE ...]``: print a caption per image, optionally draw where it looked.

The CLI only parses and prints; the work is ``captioning.api.Captioner``. A user's mistake
(missing or corrupt image, bad checkpoint) is one line on stderr and exit code 2; the good
images of the same call are still captioned. The helpers here are shared with ``vqa.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from .errors import UserError


def error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def device_from_arg(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cpu, cuda, cuda:N)") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_precision_arg(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """``--precision``, shared by every command that runs a model. The interactive commands
    default to auto (speed); the evaluation scripts to fp32 (scores that reproduce on any machine)."""
    from .precision import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help=f"default {default}. auto: bf16 where the CPU or GPU computes it natively (AVX512-BF16, "
                        "AMX, Ampere and later), else fp32; see captioning/precision.py")


def map_paths(out: str, n: int) -> list[Path]:
    """One attention-map file per image: OUT.png itself for one image, OUT-1.png, OUT-2.png, ...
    (in command-line order) for several."""
    out_path = Path(out)
    if n == 1:
        return [out_path]
    return [out_path.with_name(f"{out_path.stem}-{i}{out_path.suffix or '.png'}") for i in range(1, n + 1)]


def announce_default(prog: str, path: Path, extra: dict) -> None:
    """Say which default model answers, so nobody takes the emoji model for a COCO model."""
    trained_on = extra.get("trained_on", "unknown data")
    print(f"{prog}: using the default checkpoint {path.name}, trained on {trained_on}", file=sys.stderr)


def run(prog: str, body: Callable[[], int]) -> int:
    """Run a CLI body; a UserError that escapes it is one line and exit 2."""
    try:
        return body()
    except UserError as e:
        error(prog, _user_message(e))
        return 2
    except KeyboardInterrupt:
        return 130


def _user_message(e: UserError) -> str:
    """The one line of a UserError. Raised in a DataLoader worker, it comes back re-raised
    with the worker's traceback folded into the message ("Caught UserError in DataLoader
    worker process 0. Original Traceback ... captioning.errors.UserError: <message>"):
    keep the message."""
    lines = str(e).strip().splitlines() or [""]
    prefix = f"{UserError.__module__}.{UserError.__qualname__}: "
    return lines[-1][len(prefix):] if lines[-1].startswith(prefix) else lines[-1]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="caption", description="Caption images with a soft-attention LSTM (Show, Attend and Tell).")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--checkpoint", help="a caption checkpoint (.safetensors); default: the shipped one")
    p.add_argument("--beam-size", type=positive_int, default=3, help="beam width; 1 = greedy (default 3)")
    p.add_argument("--max-length", type=positive_int, default=None, help="longest caption in words (default: the model's)")
    p.add_argument("--attention-map", metavar="OUT.png", help="draw the attention of every word; with several images, OUT-1.png, OUT-2.png, ...")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    add_precision_arg(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return run("caption", lambda: _caption(args))


def _caption(args) -> int:
    from .api import DEFAULT_CAPTION_CHECKPOINT, Captioner, resolve_checkpoint
    from .transforms import load_image

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
    for (index, name, im), result in zip(good, results):
        result.image = name
        print(json.dumps(result.to_json()) if args.json else f"{name}: {result.caption}", flush=True)
        if maps:
            from .visualize import save_attention_map

            out = maps[index]
            try:
                save_attention_map(im, result.tokens, result.attention, out, title=result.caption)
            except OSError as e:
                error("caption", f"{out}: cannot write the attention map ({e.strerror or e})")
                status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
