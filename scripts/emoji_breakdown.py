"""Score an emoji captions results file by part of the name: the emoji, and its skin tone.

    python scripts/emoji_breakdown.py --captions data/emoji/captions_test_style.json --results results.json

Prints, for base emoji, skin-tone variants and other qualified names (``kiss: man, man``),
how often the whole name, the part before ``:`` and the part after it are right. Results files
come from ``scripts/evaluate_caption.py --results-out``.
"""

from __future__ import annotations

import argparse
import json
import sys

from captioning.core.commandline import run
from captioning.datasets.emoji import qualifier_breakdown
from captioning.evaluation import load_results_pairs


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--captions", required=True, help="ground-truth emoji captions, COCO format")
    p.add_argument("--results", required=True, help="COCO results file [{\"image_id\", \"caption\"}]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("emoji_breakdown", lambda: _breakdown(args))


def _breakdown(args) -> int:
    groups = qualifier_breakdown(*load_results_pairs(args.captions, args.results))
    if args.json:
        print(json.dumps(groups))
        return 0
    print(f"{'names':<10} {'images':>6} {'exact':>6} {'emoji':>6} {'after :':>7}")
    for kind, g in groups.items():
        print(f"{kind:<10} {g['images']:>6} {g['exact']:>6.1%} {g['emoji']:>6.1%} {g['qualifier']:>7.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
