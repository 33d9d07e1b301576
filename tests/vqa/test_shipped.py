"""The shipped attention-fusion VQA checkpoint, used as the README uses it: `vqa ... --attention-map`."""

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from vqa.api import ATTENTION_VQA_CHECKPOINT as ATTENTION
from vqa.api import VQAModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "easy_vqa_test_0.png"  # easy-VQA test image 0
# That image's questions and their easy-VQA answers (a red triangle on its own).
TRUTH = {"what is the red shape?": "triangle", "what is the color of the shape?": "red",
         "does the image contain a circle?": "no", "is no blue shape present?": "yes"}


def test_the_attention_checkpoint_is_small_and_has_attention():
    assert ATTENTION.stat().st_size <= 10 * 2**20  # the budget for a shipped VQA model
    vqa = VQAModel.from_pretrained(ATTENTION)
    assert vqa.model.has_attention and vqa.model.cfg.fusion.name == "attention"


@pytest.mark.parametrize("question", sorted(TRUTH))
def test_the_attention_checkpoint_answers_the_example(question):
    answers = VQAModel.from_pretrained(ATTENTION)(str(EXAMPLE), question, top_k=1)
    assert answers[0]["answer"] == TRUTH[question]


def test_readme_attention_map_command_works_with_what_is_shipped(tmp_path):
    out = tmp_path / "glimpses.png"
    r = subprocess.run([sys.executable, "-m", "vqa.cli", str(EXAMPLE), "what is the red shape?", "--checkpoint",
                        str(ATTENTION), "--attention-map", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "triangle"
    assert "warning" not in r.stderr
    with Image.open(out) as im:  # the image and one panel per glimpse, side by side
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]
