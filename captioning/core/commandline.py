"""What every command shares: one line and exit 2 for a user error, common flags.

Nothing here imports torch at module level: ``caption --help`` parses and answers before
the model's libraries load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from captioning.core.errors import UserError
from captioning.core.precision import PRECISIONS  # that module imports torch only when a function runs


def error(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def device_from_arg(name: str):
    """--device NAME -> torch.device, refused in one line when absent or malformed."""
    import torch

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
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help=f"default {default}. auto: bf16 where the CPU or GPU computes it natively (AVX512-BF16, "
                        "AMX, Ampere and later), else fp32; see captioning/core/precision.py")


def map_paths(out: str, n: int) -> list[Path]:
    """One attention-map file per image: OUT.png itself for one image, OUT-1.png, OUT-2.png, ...
    (in command-line order) for several. Checked before any work: the format must be one
    the drawing can write, and the folder must be able to exist."""
    from captioning.core.fileio import check_writable
    from captioning.core.visualize import image_format

    out_path = Path(out)
    image_format(out_path)
    check_writable(out_path)
    if n == 1:
        return [out_path]
    return [out_path.with_name(f"{out_path.stem}-{i}{out_path.suffix or '.png'}") for i in range(1, n + 1)]


def check_report_path(out: str) -> None:
    """``--html REPORT.html``: refused before any work when it cannot be written (a folder, a
    path under a file, a folder that is not writable)."""
    from captioning.core.fileio import check_writable

    check_writable(Path(out))


def without_unreadable(prog: str, records: list, skip: bool) -> list:
    """An evaluation split's records (anything with an image ``path``) whose image reads. An
    unreadable one is refused before any work, in one line listing them all, or with ``skip``
    (``--skip-bad-images``) listed on stderr and left out."""
    from captioning.core.images import split_readable

    kept, bad = split_readable(records)
    if not kept:
        raise UserError(f"none of the {len(records)} images can be read: {'; '.join(map(str, bad[:3]))}")
    if bad and not skip:
        raise UserError(f"{len(bad)} of {len(records)} images cannot be read (pass --skip-bad-images to evaluate "
                        f"without them): {'; '.join(map(str, bad))}")
    for problem in bad:
        print(f"{prog}: skipped: {problem}", file=sys.stderr)
    return kept


def add_skip_bad_images_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad-images", action="store_true", help="evaluate without the split's unreadable images "
                   "(listed on stderr); otherwise they are refused before any work")


def announce_default(prog: str, path: Path, extra: dict) -> None:
    """Say which default model answers, so nobody takes the emoji model for a COCO model."""
    trained_on = extra.get("trained_on", "unknown data")
    print(f"{prog}: using the default checkpoint {path.name}, trained on {trained_on}", file=sys.stderr)


def run(prog: str, body: Callable[[], int]) -> int:
    """Run a CLI body; a UserError that escapes it is one line and exit 2. A reader that stops
    reading (``caption FOLDER | head -1``) ends the command quietly, as it ends ``ls``."""
    try:
        return body()
    except UserError as e:
        error(prog, _user_message(e))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 128 + 13  # what a shell reports for a command ended by SIGPIPE, as `ls | head` is


def _silence_stdout() -> None:
    """Point stdout at /dev/null: Python flushes it again at exit, and that flush would fail
    on the closed pipe with a second error message."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout already closed or not a real file
        pass


def _user_message(e: UserError) -> str:
    """The one line of a UserError. Raised in a DataLoader worker, it comes back re-raised
    with the worker's traceback folded into the message ("Caught UserError in DataLoader
    worker process 0. Original Traceback ... captioning.core.errors.UserError: <message>"):
    keep the message."""
    lines = str(e).strip().splitlines() or [""]
    prefix = f"{UserError.__module__}.{UserError.__qualname__}: "
    return lines[-1][len(prefix):] if lines[-1].startswith(prefix) else lines[-1]
