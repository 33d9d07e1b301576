import torch

from captioning.core.transforms import augment


def flat_colours(b: int = 16, size: int = 32) -> torch.Tensor:
    """(b, 3, size, size) images, each one flat colour (like a skin-tone patch)."""
    colours = torch.rand(b, 3, 1, 1, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    return colours.expand(b, 3, size, size).clone()


def test_strength_zero_is_identity():
    x = torch.rand(4, 3, 24, 24)
    assert torch.equal(augment(x, 0.0), x)


def test_colour_jitter_changes_colours_and_color_zero_keeps_them_exact():
    x = flat_colours()
    jittered = augment(x, 1.0, torch.Generator().manual_seed(1))
    assert (jittered - x).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image's colour moved
    # color=0: only the crop moves pixels; a flat image cropped is the same flat image.
    kept = augment(x, 1.0, torch.Generator().manual_seed(1), color=0.0)
    torch.testing.assert_close(kept, x, atol=1e-5, rtol=0)


def test_geometry_still_applies_without_colour_jitter():
    x = torch.zeros(8, 3, 32, 32)
    x[:, :, 8:24, 8:24] = 1.0  # a centred white square: a crop enlarges and moves it
    out = augment(x, 1.0, torch.Generator().manual_seed(2), color=0.0)
    assert not torch.allclose(out, x, atol=1e-3)
    assert torch.equal(augment(x, 1.0, torch.Generator().manual_seed(2), color=0.0), out)  # seeded: reproducible
