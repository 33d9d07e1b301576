"""vqa.fusion: output sizes, attention maps that sum to 1, one projection per image."""

import pytest
import torch
import torch.nn.functional as F

from captioning.core.errors import UserError
from vqa.fusion import FUSIONS, FusionConfig, build_fusion


@pytest.mark.parametrize("fusion, glimpses", [*((name, 1) for name in FUSIONS), ("attention", 2)])
def test_shapes_and_attention(fusion, glimpses):
    torch.manual_seed(0)
    cfg = FusionConfig(fusion, fusion_dim=8, attention_dim=5, glimpses=glimpses)
    module = build_fusion(cfg, feature_dim=10, question_dim=6)
    assert isinstance(module, FUSIONS[fusion])
    grid = F.normalize(torch.randn(2, 4, 10), dim=-1)  # (B, P, C)
    image_index = torch.tensor([0, 0, 1, 1, 1])
    question = torch.randn(5, 6)
    fused, alpha = module(grid, image_index, question)
    assert fused.shape == (5, module.out_dim)
    if not module.has_attention:
        assert alpha is None
        return
    assert alpha.shape == (5, glimpses, 4)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(5, glimpses))
    # Questions about the same image with the same words attend identically.
    again, alpha2 = module(grid, torch.tensor([1]), question[2:3])
    torch.testing.assert_close(again[0], fused[2])
    # The glimpses are convex combinations of the image's cells.
    context = fused[:, : glimpses * 10].reshape(5, glimpses, 10)
    torch.testing.assert_close(context, torch.bmm(alpha, grid[image_index]))


def test_unknown_fusion_is_a_user_error():
    with pytest.raises(UserError, match="unknown fusion"):
        FusionConfig("bilinear")
    with pytest.raises(UserError, match="glimpses"):
        FusionConfig("attention", glimpses=0)


def test_checkpoints_from_before_the_registry_still_read():
    """Their fusion config said ``fusion`` for the name and stored the derived sizes."""
    old = {"fusion": "mul", "feature_dim": 1280, "question_dim": 512, "fusion_dim": 64, "attention_dim": 32, "glimpses": 2}
    assert FusionConfig.from_json(old) == FusionConfig("mul", fusion_dim=64, attention_dim=32, glimpses=2)


def test_the_fusion_flag_offers_the_registry():
    import argparse

    from captioning.core.flags import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, FusionConfig)
    action = next(a for a in parser._actions if a.option_strings == ["--fusion"])
    assert list(action.choices) == list(FUSIONS)
    assert dataclass_from_args(FusionConfig, parser.parse_args(["--fusion", "concat"])).name == "concat"
    with pytest.raises(SystemExit):
        parser.parse_args(["--fusion", "bilinear"])
