"""The README's first command on the shipped checkpoints and examples, run as a user runs it.

Run from another working directory, so the defaults must be found through the installed
package. These pin the shipped models' answers on the shipped examples: a checkpoint that no
longer loads (fp16 weights, the fine-tuned CNN blocks it carries over the Lite0 package's
weights) or that was replaced by a worse one fails here.
"""

import subprocess
import sys
from pathlib import Path

from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_caption_example_with_the_default_checkpoint(tmp_path):
    r = run("captioning.cli", EXAMPLES / "emoji_google_grinning_face.png", "--attention-map", "att.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith(": grinning face")
    # One line says what the default model was trained on, so nobody takes it for a COCO model.
    assert "trained on emoji names" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with Image.open(tmp_path / "att.png") as im:
        assert im.size[0] > 300  # the input plus one panel per word


def test_vqa_example_with_the_default_checkpoint(tmp_path):
    r = run("vqa.cli", EXAMPLES / "easy_vqa_test_0.png", "what is the color of the shape?", "--top-k", "2",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    top = r.stdout.split()
    assert top[0] == "red" and float(top[1]) > 0.9
    assert "trained on easy-VQA" in r.stderr
