"""Inference precision: what auto picks, that bf16 really computes in bf16, and that the
shipped models say the same things in bf16 as in fp32 on the shipped examples."""

from pathlib import Path

import pytest
import torch

from captioning.api import Captioner, generate
from captioning.core.errors import UserError
from captioning.core.precision import autocast, native_bf16, resolve_precision
from vqa.api import VQAModel

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_auto_is_bf16_exactly_where_the_hardware_has_it():
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    # Where the CUDA check cannot run, a cuda device is never called native.
    assert native_bf16("cuda") == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    with pytest.raises(UserError, match="precision 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_bf16_autocast_computes_in_bf16_and_fp32_does_not():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", "bf16"):
        assert torch.mm(a, b).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert torch.mm(a, b).dtype == torch.float32


def test_bf16_decoding_keeps_scores_in_fp32_and_close_to_fp32(trained):
    _, _, records, vocab, model = trained
    from captioning.core.images import read_image
    from captioning.core.transforms import preprocess

    images = preprocess([read_image(r.path) for r in records[:6]], model.image_size)
    model.eval()
    for beam in (1, 3):
        full = generate(model, images, beam, precision="fp32")
        half = generate(model, images, beam, precision="bf16")
        # Scores are mean log-probabilities, accumulated in fp32 from bf16 logits: they move
        # by bf16 rounding, far less than a different word would move them.
        assert [h.score for h in half] == pytest.approx([h.score for h in full], abs=0.05)
        assert all(h.alphas.dtype == torch.float32 for h in half)
        # bf16 really ran: fp32 scores are reproduced bit for bit, bf16 ones are not all equal.
        assert [h.score for h in generate(model, images, beam, precision="fp32")] == [h.score for h in full]
        assert [h.score for h in half] != [h.score for h in full]


def test_shipped_models_answer_the_same_in_bf16():
    for precision in ("fp32", "bf16"):
        captioner = Captioner.from_pretrained(precision=precision)
        assert captioner.precision == precision
        assert captioner(EXAMPLES / "emoji_google_grinning_face.png").caption == "grinning face"
        vqa = VQAModel.from_pretrained(precision=precision)
        top = vqa(EXAMPLES / "easy_vqa_test_0.png", "what is the color of the shape?", top_k=1)[0]
        assert top["answer"] == "red" and top["score"] > 0.9
