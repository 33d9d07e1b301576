"""The shipped scene models (issue #24): they load, are small, say what they were trained on and
how, and answer the example scene as the docs show."""

from pathlib import Path

import pytest

from captioning.core.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "examples" / "scene_test_3000004.png"


@pytest.mark.parametrize("name,kind", [("caption_scenes", "caption"), ("vqa_scenes", "vqa")])
def test_scene_checkpoints_carry_their_data_and_commands(name, kind):
    path = ROOT / "checkpoints" / f"{name}.safetensors"
    assert path.stat().st_size <= 15 * 2**20
    ckpt = read_checkpoint(path, kind)
    assert "scenes" in ckpt.extra["trained_on"]
    assert ckpt.extra["command"][0].startswith("scripts/train_")
    assert any("prepare_scenes.py" in n for n in ckpt.extra["notes"])
    assert "test" in ckpt.extra["results"]


def test_scene_vqa_answers_the_example_and_looks_at_the_object():
    import numpy as np

    from captioning.core.grounding import attention_correctness
    from vqa.api import VQAModel

    vqa = VQAModel.from_pretrained(ROOT / "checkpoints" / "vqa_scenes.safetensors")
    prediction = vqa.predict(SCENE, "what is above the bus?")
    assert prediction.answers[0]["answer"] == "motorway"
    motorway = [10.0, 9.0, 62.0, 62.0]  # its box in instances_test.json (image 3000004)
    correctness = attention_correctness(np.asarray(prediction.attention).mean(0), [motorway], (224, 224))
    assert correctness > 0.3  # a uniform map scores the box's share of the picture, 0.077
