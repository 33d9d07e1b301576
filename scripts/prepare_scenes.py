"""Build the emoji scenes dataset: 2-4 emoji a picture, as COCO instances + captions and VQA v2 files.

    python scripts/prepare_emoji.py --out data/emoji --vendors google,twitter,apple   # fetches the packages
    python scripts/prepare_scenes.py --out data/scenes --cache data/emoji/.cache

Apple's artwork draws only the test_style split and is not freely licensed: keep --out under
``data/``. See :mod:`captioning.datasets.scenes` for the scenes, captions, questions and splits.
"""

from __future__ import annotations

import argparse
import sys
import time

from captioning.core.commandline import run
from captioning.datasets.scenes import (
    DEFAULT_SCENES,
    SPLITS,
    build_scenes,
    grid_picture,
    package_dirs_in,
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (images/<split>/ and the JSON files)")
    p.add_argument("--cache", default="data/emoji/.cache",
                   help="folder holding the extracted emoji-datasource packages (default data/emoji/.cache)")
    p.add_argument("--seed", type=int, default=0, help="seed of the concept subset and of every scene")
    p.add_argument("--concept-seed", type=int, default=0, help="seed of the emoji dataset's concept split (its --seed)")
    p.add_argument("--grid", metavar="PNG", help="also draw the first 12 scenes of the first split, with boxes, into PNG")
    for split in SPLITS:
        p.add_argument(f"--{split.replace('_', '-')}", type=int, default=DEFAULT_SCENES[split], metavar="N",
                       help=f"scenes in {split} (default {DEFAULT_SCENES[split]}; 0 skips it)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("prepare_scenes", lambda: _prepare(args))


def _prepare(args) -> int:
    start = time.perf_counter()
    counts = {split: getattr(args, split) for split in SPLITS}
    summaries = build_scenes(package_dirs_in(args.cache), args.out, counts, args.seed, args.concept_seed)
    for summary in summaries:
        print(summary)
    if args.grid and summaries:
        grid_picture(args.out, summaries[0].split, args.grid)
    n, seconds = sum(s.scenes for s in summaries), time.perf_counter() - start
    print(f"done: {n:,} scenes in {seconds:.1f} s ({60 * n / max(seconds, 1e-9):,.0f} scenes/min) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
