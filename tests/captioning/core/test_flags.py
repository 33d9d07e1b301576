"""captioning/core/flags.py: config dataclasses become flags, each with its help and default."""

import argparse
import dataclasses

import pytest

from captioning.core.commandline import add_precision_arg
from captioning.core.flags import add_dataclass_args, field_help
from tests.conftest import SCRIPTS, load_script


@dataclasses.dataclass
class Base:
    width: int = 4  # how wide, in cells
    # The explanation of a field may sit on the
    # lines above it.
    above: bool = False
    plain: float = 0.5


@dataclasses.dataclass
class Child(Base):
    named: str = dataclasses.field(default="x", metadata={"help": "from metadata, 100% of it"})
    ratio: float = 1.0  # share of the "#" signs, 5% by default: not a comment inside a string


def test_help_comes_from_metadata_the_line_comment_or_the_lines_above():
    fields = {f.name: f for f in dataclasses.fields(Child)}
    assert field_help(Child, fields["width"]) == "how wide, in cells"  # declared in the base class
    assert field_help(Child, fields["above"]) == "The explanation of a field may sit on the lines above it."
    assert field_help(Child, fields["plain"]) is None
    assert field_help(Child, fields["named"]) == "from metadata, 100% of it"
    p = argparse.ArgumentParser()
    add_dataclass_args(p, Child)
    text = p.format_help()  # a % in a help text would break argparse's formatting
    assert "from metadata, 100% of it (default: x)" in text and "(default: 0.5)" in text


@pytest.mark.parametrize("script", ["train_caption", "train_vqa"])
def test_every_training_flag_has_one_line_of_help_with_its_default(script):
    """--embed-dim, --hidden-dim, --alpha-c, --scst-samples, ... said only "(default: 512)"."""
    parser = load_script(script).get_args_parser()
    missing = [a.option_strings[0] for a in parser._actions
               if a.option_strings and a.help != argparse.SUPPRESS
               and (not a.help or a.help.startswith("(default") or len(a.help.split()) < 2)]
    assert missing == []
    for group in parser._action_groups:
        if group.title in ("decoder", "training", "answer classifier", "question encoder", "fusion"):
            for a in group._group_actions:
                assert a.help.endswith(f"(default: {a.default})"), a.option_strings


def test_precision_help_names_a_file_that_exists():
    p = argparse.ArgumentParser()
    add_precision_arg(p)
    text = p.format_help().replace("\n", " ")
    path = text.split("see ")[1].split()[0].rstrip(").,")
    assert (SCRIPTS.parent / path).is_file(), path
