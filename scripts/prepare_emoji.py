"""Build the emoji captioning dataset (COCO captions format) from emoji npm packages.

    python scripts/prepare_emoji.py --out data/emoji --vendors google,twitter,apple
    python scripts/prepare_emoji.py --out data/emoji_all \
        --vendors google,twitter,apple,fluent3d,fluentflat,fluent,emojione,notov1,openmoji

Needs ``npm`` (the packages are fetched with ``npm pack`` into the cache, once) and, for the
SVG styles, ``resvg-py`` (drawings rendered once into the cache). Apple's and Facebook's images
are not freely licensed: keep ``--out`` and ``--cache`` under ``data/``. ``OUT/licenses.json``
records every style's package, licence and the credit it asks for. See
:mod:`captioning.datasets.emoji` for the captions and the splits.
"""

from __future__ import annotations

import argparse
import sys
import time

from captioning.core.commandline import run
from captioning.datasets.emoji import VERSION, prepare_emoji


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output folder (images/ and captions_<split>.json)")
    p.add_argument("--vendors", default="google,twitter,apple",
                   help="comma-separated: freely licensed styles train (google, twitter, fluent3d, fluentflat, fluent, "
                        "emojione, notov1, openmoji); apple, facebook make test_style")
    p.add_argument("--seed", type=int, default=0, help="seed of the concept split")
    p.add_argument("--cache", default=None, help="where npm tarballs and extracted packages go (default: OUT/.cache)")
    p.add_argument("--version", default=VERSION, help="emoji-datasource version (names; google/twitter/apple/facebook drawings)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("prepare_emoji", lambda: _prepare(args))


def _prepare(args) -> int:
    start = time.perf_counter()
    for summary in prepare_emoji(args.out, args.vendors.split(","), args.seed, args.cache, args.version):
        print(summary)
    print(f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
