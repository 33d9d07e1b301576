"""captioning/visualize.py: real PNGs through matplotlib's Agg canvas, read back with PIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from captioning.core.visualize import (
    CELL_COLOUR,
    attention_overlay,
    outline_cell,
    save_attention_map,
    upsample_attention,
)


def _image(width=160, height=120):
    # A mid-grey picture with texture, so brightness differences come from the overlay alone.
    rng = np.random.default_rng(0)
    pixels = 110 + rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _one_cell(h=4, w=4, row=0, col=3):
    a = np.zeros((h, w), np.float32)
    a[row, col] = 1.0
    return a


def test_save_attention_map_writes_a_png(tmp_path):
    alphas = torch.softmax(torch.randn(3, 7, 7).flatten(1), dim=1).view(3, 7, 7)
    path = tmp_path / "maps" / "cat.png"  # the folder does not exist yet
    save_attention_map(_image(), ["a", "small", "cat"], alphas, path, title="a small cat")
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        assert im.width > 4 * 100 and im.height > 100  # four panels side by side
    assert [p.name for p in path.parent.iterdir()] == ["cat.png"]  # no temporary file left


def test_many_words_wrap_into_rows(tmp_path):
    words = [f"w{k}" for k in range(11)]  # 12 panels: 3 rows of at most 5
    save_attention_map(_image(), words, np.full((11, 2, 3), 1 / 6), tmp_path / "m.png", image_size=64)
    with Image.open(tmp_path / "m.png") as im:
        assert im.height > 2.5 * im.width / 5


def test_no_words_draws_the_image_alone(tmp_path):
    save_attention_map(_image(), [], np.zeros((0, 7, 7)), tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im:
        assert im.width > 0 and im.height > 0


def test_word_count_mismatch_is_a_bug(tmp_path):
    with pytest.raises(ValueError, match="2 attention maps for 3 words"):
        save_attention_map(_image(), ["a", "b", "c"], np.zeros((2, 7, 7)), tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"\(T, h, w\)"):
        save_attention_map(_image(), ["a"], np.zeros((1, 49)), tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()


def test_hard_attentions_chosen_cell_is_outlined_on_its_panel(tmp_path):
    """Cell (row 2, col 5) of a 4 x 8 grid over a 160 x 120 picture spans x 100..119, y 60..89:
    its outline is drawn there, in the cell colour, and nowhere else."""
    image = Image.new("RGB", (160, 120), (40, 40, 40))
    out = np.asarray(outline_cell(image, (2, 5), (4, 8)))
    changed = np.nonzero((out != 40).any(axis=2))
    assert (changed[1].min(), changed[1].max(), changed[0].min(), changed[0].max()) == (100, 119, 60, 89)
    assert tuple(out[60, 110]) == CELL_COLOUR and tuple(out[75, 110]) == (40, 40, 40)  # an outline, not a fill
    assert np.asarray(image).max() == 40  # the input is left alone
    alphas = np.full((2, 4, 8), 1 / 32, np.float32)
    save_attention_map(image, ["a", "b"], alphas, tmp_path / "cells.png", cells=[(2, 5), (0, 0)])
    save_attention_map(image, ["a", "b"], alphas, tmp_path / "plain.png")
    with Image.open(tmp_path / "cells.png") as a, Image.open(tmp_path / "plain.png") as b:
        assert a.size == b.size and np.abs(np.asarray(a, int) - np.asarray(b, int)).max() > 100
    with pytest.raises(ValueError, match="1 chosen cells for 2 words"):
        save_attention_map(image, ["a", "b"], alphas, tmp_path / "m.png", cells=[(0, 0)])


def test_attended_cell_is_brighter_and_hotter():
    image = _image(160, 120)
    out = np.asarray(attention_overlay(image, _one_cell()), dtype=np.float32)
    assert out.shape == (120, 160, 3)
    # Cell (row 0, col 3) of a 4x4 grid covers the top-right 40x30 pixels.
    attended, far = out[:30, 120:], out[90:, :40]
    assert attended.mean() > far.mean() + 30  # brighter
    red_minus_blue = lambda px: (px[..., 0] - px[..., 2]).mean()  # noqa: E731
    assert red_minus_blue(attended) > red_minus_blue(far) + 15  # hotter
    # The same map as a torch tensor draws the same picture.
    assert np.array_equal(np.asarray(attention_overlay(image, torch.from_numpy(_one_cell()))), out.astype(np.uint8))


def test_upsampling_is_smooth_and_peaks_in_the_attended_cell():
    m = upsample_attention(_one_cell(), (160, 120))
    assert m.shape == (120, 160) and m.min() >= 0 and m.max() == pytest.approx(1.0)
    row, col = np.unravel_index(m.argmax(), m.shape)
    assert row < 30 and col >= 120
    # Smooth, not blocky: no jump between neighbouring pixels anywhere near a cell's height.
    assert np.abs(np.diff(m, axis=0)).max() < 0.1 and np.abs(np.diff(m, axis=1)).max() < 0.1
    # A uniform map means "looked everywhere": it stays uniform instead of becoming noise.
    flat = upsample_attention(np.full((7, 7), 1 / 49), (70, 70))
    assert np.allclose(flat, 1.0, atol=1e-4)


def test_failed_save_leaves_the_old_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "map.png"
    path.write_bytes(b"the previous map")

    def crash_midway(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        save_attention_map(_image(), ["a"], np.ones((1, 7, 7)), path)
    assert path.read_bytes() == b"the previous map"
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]
