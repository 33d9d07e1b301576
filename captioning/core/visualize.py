"""Where the model looked: attention maps drawn over the image, one panel per word.

Xu et al. 2015, "Show, Attend and Tell", Figures 2-3: each generated word is shown with its
soft-attention weights over the encoder's (h, w) grid, upsampled smoothly to the image and laid
over it, so the attended region glows and the rest of the image fades. VQA uses the same
drawing for its question-guided attention (Kazemi & Elqursh 2017).

Drawing uses ``matplotlib.figure.Figure`` with the Agg canvas directly, never ``pyplot``, so
importing this module neither picks nor changes anyone's backend, and it works in threads and
on machines without a display.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from captioning.core.errors import UserError
from captioning.core.fileio import atomic_path
from captioning.core.images import DISPLAY_SIDE

PANELS_PER_ROW = 5
PANEL_INCHES = 2.4  # width of one panel; 100 dpi makes it 240 px
MAX_DISPLAY_SIDE = DISPLAY_SIDE  # larger photos are shrunk first: the panels are small anyway
OPACITY = 0.45  # how strongly the heat colours cover the image where attention peaks
HEAT_TOP = 0.85  # top of the colour map used: its palest end would wash out the detail
FLOOR = 0.35  # brightness left where attention is zero: the image stays readable
CELL_COLOUR = (0, 229, 255)  # hard attention's chosen cell: cyan, apart from the heat colours
FORMATS = ("png", "jpg", "jpeg", "pdf", "svg")  # what a map is written as, by its file's suffix


def image_format(path: str | os.PathLike) -> str:
    """The format a map named ``path`` is written in: its suffix's (none: PNG), so ``out.jpg``
    holds a JPEG, not PNG bytes under a .jpg name. Other suffixes raise a one-line UserError."""
    suffix = os.path.splitext(str(path))[1]
    fmt = suffix.lower().lstrip(".") or "png"
    if fmt not in FORMATS:
        raise UserError(f"{path}: cannot write an attention map as {suffix} (use one of "
                        f"{', '.join('.' + f for f in FORMATS)})")
    return fmt


def upsample_attention(alpha_map: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Smooth (h, w) attention -> (H, W) float array in [0, 1], ``size`` = (W, H) as in PIL.

    Bicubic upsampling, then a Gaussian blur half a grid cell wide, gives the soft blobs of
    the Show-Attend-Tell figures instead of a visible grid. The map is divided by its own
    maximum: the brightest spot reads as 1 whatever the grid size, and a uniform map stays
    uniform (the model looked everywhere) rather than being stretched into noise.
    """
    if torch.is_tensor(alpha_map):
        a = alpha_map.detach().to("cpu", torch.float32)
    else:
        a = torch.from_numpy(np.array(alpha_map, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"attention map must be (h, w), got shape {tuple(a.shape)}")
    h, w = a.shape
    width, height = size
    up = F.interpolate(a[None, None], size=(height, width), mode="bicubic", align_corners=False)  # (1, 1, H, W)
    up = _gaussian_blur(up, sigma=0.5 * max(height / h, width / w))
    up = up[0, 0].clamp_(min=0.0)  # bicubic overshoots below zero next to sharp peaks
    peak = up.max()
    return (up / peak if peak > 0 else up).numpy()


def attention_overlay(
    image: Image.Image, alpha_map: np.ndarray | torch.Tensor, cmap: str = "inferno"
) -> Image.Image:
    """``image`` with ``alpha_map`` (h, w) laid over it: dimmed where attention is low, heat-
    coloured and at full brightness where it peaks. Same size as ``image``, RGB."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    m = upsample_attention(alpha_map, image.size)[..., None]  # (H, W, 1) in [0, 1]
    heat = colormaps[cmap](HEAT_TOP * m[..., 0])[..., :3].astype(np.float32)  # (H, W, 3)
    lit = rgb * (FLOOR + (1.0 - FLOOR) * m)
    out = (1.0 - OPACITY * m) * lit + OPACITY * m * heat
    return Image.fromarray((out.clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))


def save_attention_map(
    image: Image.Image,
    words: list[str],
    alphas: np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    title: str | None = None,
    image_size: int | None = None,
    cells: Sequence[tuple[int, int]] | None = None,
) -> None:
    """Write the image, then one panel per word with its attention map over it, as a PNG (or
    the JPEG, PDF or SVG that ``path``'s suffix names).

    ``alphas`` is (T, h, w) with T == len(words). ``title`` (the caption, or question and
    answer) heads the figure. ``image_size`` draws the image squashed to the square the model
    saw; without it the image keeps its aspect ratio, which is the same mapping since the
    model's grid covers the whole image either way. ``cells`` [(row, col)] per word (hard
    attention's chosen cells, ``CaptionResult.cells``) are outlined on the word's panel. The
    file is written atomically.
    """
    alphas = alphas.detach().cpu().float().numpy() if torch.is_tensor(alphas) else np.asarray(alphas, np.float32)
    if alphas.ndim != 3:
        raise ValueError(f"alphas must be (T, h, w), got shape {alphas.shape}")
    if alphas.shape[0] != len(words):
        raise ValueError(f"{alphas.shape[0]} attention maps for {len(words)} words")

    image = image.convert("RGB")
    if image_size is not None:
        image = image.resize((image_size, image_size), Image.BICUBIC)
    elif max(image.size) > MAX_DISPLAY_SIDE:
        image = image.copy()
        image.thumbnail((MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE), Image.BICUBIC)

    panels = [("input", image)] + [(word, attention_overlay(image, a)) for word, a in zip(words, alphas)]
    if cells is not None:
        if len(cells) != len(words):
            raise ValueError(f"{len(cells)} chosen cells for {len(words)} words")
        grid = alphas.shape[1:]
        panels[1:] = [(word, outline_cell(im, cell, grid)) for (word, im), cell in zip(panels[1:], cells)]
    fig = _grid_figure(panels, image.size, title)
    fmt = image_format(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=100, facecolor="white")


def outline_cell(image: Image.Image, cell: tuple[int, int], grid: tuple[int, int],
                 colour: tuple[int, int, int] = CELL_COLOUR) -> Image.Image:
    """A copy of ``image`` with grid cell ``cell`` (row, col) of an (h, w) ``grid`` over the
    whole picture outlined: where hard attention took the word's context from."""
    out = image.copy()
    (r, c), (h, w) = cell, grid
    width, height = out.size
    box = (c * width / w, r * height / h, (c + 1) * width / w - 1, (r + 1) * height / h - 1)
    ImageDraw.Draw(out).rectangle(box, outline=colour, width=max(2, round(min(width, height) / 100)))
    return out


def _grid_figure(panels: list[tuple[str, Image.Image]], size: tuple[int, int], title: str | None) -> Figure:
    ncols = min(PANELS_PER_ROW, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    width, height = size
    panel_h = PANEL_INCHES * height / width
    title_lines = textwrap.wrap(title, width=int(ncols * PANEL_INCHES * 9)) if title else []
    head = 0.25 * len(title_lines) + (0.15 if title_lines else 0.0)  # inches for the title
    fig_w, fig_h = ncols * PANEL_INCHES, nrows * (panel_h + 0.3) + head
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    if title_lines:
        fig.suptitle("\n".join(title_lines), fontsize=12, y=1 - 0.08 / fig_h, va="top", parse_math=False)
    grid = fig.add_gridspec(nrows, ncols, left=0.01, right=0.99, bottom=0.01, top=1 - (head + 0.05) / fig_h,
                            wspace=0.04, hspace=0.3 / panel_h)
    for k, (label, im) in enumerate(panels):
        ax = fig.add_subplot(grid[k // ncols, k % ncols])
        ax.imshow(np.asarray(im), interpolation="antialiased")
        ax.set_title(label, fontsize=11, pad=3, parse_math=False)
        ax.set_axis_off()
    return fig


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (1, 1, H, W), edges padded by reflection."""
    if sigma < 0.5:
        return x
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    _, _, height, width = x.shape
    pad_w, pad_h = min(radius, width - 1), min(radius, height - 1)
    # Reflection needs pad < side, so tiny images get a kernel cut to fit, renormalised.
    kw, kh = k[radius - pad_w : radius + pad_w + 1], k[radius - pad_h : radius + pad_h + 1]
    x = F.conv2d(F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else x, (kw / kw.sum()).view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else x, (kh / kh.sum()).view(1, 1, -1, 1))
