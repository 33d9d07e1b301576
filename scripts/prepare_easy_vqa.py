"""Convert the easy-VQA dataset (PyPI ``easy-vqa``) into VQA v2 question and annotation files.

    python scripts/prepare_easy_vqa.py --out data/easy_vqa

See :mod:`vqa.datasets.easy_vqa` for the format.
"""

from __future__ import annotations

import argparse
import sys
import time

from captioning.core.commandline import run
from vqa.datasets.easy_vqa import prepare_easy_vqa


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (VQA v2 JSON files and images/{train,test}/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("prepare_easy_vqa", lambda: _prepare(args))


def _prepare(args) -> int:
    start = time.perf_counter()
    for summary in prepare_easy_vqa(args.out):
        print(summary)
    print(f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
