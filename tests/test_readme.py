"""The README is a manual: every command in it parses with the parser of the script or entry
point it names, its Python examples run as doctests on the shipped models, and it keeps the
limits that keep it readable (250 lines, no table cell over 200 characters)."""

from __future__ import annotations

import argparse
import doctest
import os
import re
import shlex
import warnings
from pathlib import Path

import pytest

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, comments dropped, split at && and |."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|", line):
            if part.strip():
                out.append(shlex.split(part))
    return out


def parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser | None, list[str]]:
    """(the project's parser for this command, its arguments), or (None, _) for other tools."""
    while argv and argv[0] in ("torchrun", "/usr/bin/time") or (argv and argv[0].startswith("-")):
        argv = argv[1:]
        while argv and argv[0].startswith("-"):  # torchrun's / time's own options
            argv = argv[1:]
    if not argv:
        return None, []
    if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].startswith("scripts/"):
        argv = argv[1:]
    if argv[0].startswith("scripts/") and argv[0].endswith(".py"):
        return load_script(Path(argv[0]).stem).get_args_parser(), argv[1:]
    if argv[0] == "caption":
        from captioning.cli import get_parser
    elif argv[0] == "vqa":
        from vqa.cli import get_parser
    elif argv[0] == "explore":
        from explorer.server import get_parser
    else:
        return None, []
    return get_parser(), argv[1:]


def project_commands() -> list[list[str]]:
    found = [c for block in blocks("bash") for c in commands(block)]
    cells = re.findall(r"`([^`]+)`", "\n".join(line for line in README.splitlines() if line.startswith("|")))
    found += [shlex.split(c) for c in cells if re.match(r"(python scripts/|caption |vqa |explore |/usr/bin/time )", c)]
    return [c for c in found if parser_for(c)[0] is not None]


def test_the_readme_stays_a_manual():
    lines = README.splitlines()
    assert len(lines) <= 250
    long_cells = [(n, cell[:40]) for n, line in enumerate(lines, 1) if line.startswith("|")
                  for cell in line.strip("|").split("|") if len(cell.strip()) > 200]
    assert long_cells == []


def test_there_are_commands_for_every_entry_point():
    names = {" ".join(c[:2]) if c[0].startswith("python") else c[0] for c in project_commands()}
    assert {"caption", "vqa", "explore", "python scripts/train_caption.py", "python scripts/train_vqa.py",
            "python scripts/evaluate_caption.py", "python scripts/evaluate_vqa.py",
            "python scripts/prepare_easy_vqa.py", "python scripts/prepare_emoji.py"} <= names


@pytest.mark.parametrize("argv", project_commands(), ids=lambda c: " ".join(c)[:70])
def test_every_command_parses(argv):
    """Each command's flags exist and take the values shown, in the script's own parser."""
    parser, args = parser_for(argv)
    try:
        parser.parse_args(args)
    except SystemExit as e:
        if e.code == 0 and "--help" in args:
            return
        pytest.fail(f"{' '.join(argv)}: refused by its parser (exit {e.code})")


def test_the_ci_runs_the_readmes_test_command():
    test_command = [c for c in commands(blocks("bash")[1])][-1]
    assert test_command[:3] == ["python", "-m", "pytest"]
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert shlex.split(ci[-1]) == test_command
    install = commands(blocks("bash")[0])
    assert ["pip", "install", "-e", ".[dev]"] in install
    assert 'python -m pip install -q -e ".[dev]"' in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_print_what_they_say(index, monkeypatch):
    """The README's Python blocks, as doctests, on the shipped checkpoints."""
    monkeypatch.chdir(ROOT)  # the examples use paths relative to the repository
    text = blocks("python")[index]
    test = doctest.DocTestParser().get_doctest(text, {}, f"README python block {index + 1}", "README.md", 0)
    assert test.examples
    failures: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the warnings the examples show are checked as values
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)

