"""Plot the leave-styles-out study: exact match on unseen styles against the number of training styles.

    python scripts/plot_styles_study.py runs/styles_study/results.jsonl docs/styles_study.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from captioning.core.commandline import run
from captioning.core.errors import UserError


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="results.jsonl of scripts/styles_study.py")
    p.add_argument("out", help="PNG to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    return run("plot_styles_study", lambda: plot(args))


def plot(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captioning.core.fileio import atomic_path

    try:
        rows = [json.loads(line) for line in Path(args.results).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{args.results}: not a readable results.jsonl ({e})") from None
    tests = sorted({t for r in rows for t in r["unseen"]})
    fig, ax = plt.subplots(figsize=(6, 4))
    for n, test in enumerate(tests):
        pts = sorted((r["k"], 100 * r["unseen"][test]["exact_match"]) for r in rows if test in r["unseen"])
        xs = [k + (n - (len(tests) - 1) / 2) * 0.06 for k, _ in pts]
        ax.plot(xs, [y for _, y in pts], "o", label=test)
        means = {}
        for k, y in pts:
            means.setdefault(k, []).append(y)
        ks = sorted(means)
        ax.plot(ks, [sum(means[k]) / len(means[k]) for k in ks], "-", color=ax.lines[-1].get_color(), alpha=0.6)
    ax.set_xlabel("training styles (k)")
    ax.set_ylabel("exact match on an unseen style, greedy (%)")
    ax.set_title("Emoji names in a drawing style never trained on")
    ax.set_xticks(sorted({r["k"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend(title="unseen style")
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
