"""The attention explorer: one self-contained HTML file to see where the model looked.

Each item is an image with what the model said about it: a caption (the best beam
hypothesis and the alternatives, each word with its probability and its attention map) or a
VQA answer (the question, the top answers, one attention map per glimpse). Hovering, clicking
or stepping with the arrow keys over a word lays its map over the picture, upsampled and
coloured in the browser the way ``captioning.core.visualize`` draws the PNG panels (Xu et al.
2015, "Show, Attend and Tell", Figures 2-3).

The file needs no network and no server: CSS and JavaScript are inline
(``report_template.html`` beside this module), images are data URIs shrunk to at most
``MAX_IMAGE_SIDE`` pixels, and each attention map travels as its (h, w) grid in bytes (49 for
a 7 x 7 grid), so a report of fifty images stays a few megabytes. Cards are built only when
they scroll into view. ``explorer.server`` serves the same page and fills it with items
from the models. This module works from plain data (arrays, strings, numbers) and imports no
model.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from captioning.core.fileio import atomic_write
from captioning.core.visualize import FLOOR, HEAT_TOP, OPACITY

MAX_IMAGE_SIDE = 512  # pixels: enough to see detail in a 7 x 7 or 14 x 14 grid, small in base64
COLOUR_MAPS = ("inferno", "viridis", "magma", "turbo", "gray")  # the first is the PNGs' and the default
LUT_SIZE = 64  # colours per map: the maps are smooth, 64 steps show no banding over a blurred blob
TEMPLATE = Path(__file__).with_name("report_template.html")


def image_data_uri(image: Image.Image, max_side: int = MAX_IMAGE_SIDE) -> tuple[str, int, int]:
    """(data URI, width, height) of ``image`` shrunk to ``max_side``: PNG or JPEG, whichever is
    smaller (PNG wins on flat emoji, JPEG on photos)."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.BICUBIC)
    encoded = []
    for fmt, mime, options in (("PNG", "image/png", {"optimize": True}), ("JPEG", "image/jpeg", {"quality": 88})):
        buf = io.BytesIO()
        image.save(buf, format=fmt, **options)
        encoded.append((buf.getvalue(), mime))
    data, mime = min(encoded, key=lambda e: len(e[0]))
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", image.width, image.height


def encode_maps(attention: np.ndarray) -> dict:
    """(T, h, w) attention -> {"grid": [h, w], "maps": base64 of T*h*w bytes, "peaks": [T]}.

    Each map is divided by its own maximum (as ``visualize.upsample_attention`` does) and kept
    as bytes 0-255; ``peaks`` keeps each map's largest weight, so the page can say how sharp
    the attention was (a uniform map peaks at 1/(h*w))."""
    a = np.asarray(attention, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"attention must be (T, h, w), got shape {a.shape}")
    t, h, w = a.shape
    a = np.clip(np.nan_to_num(a), 0.0, None)
    peaks = a.reshape(t, -1).max(axis=1) if t else np.zeros(0, np.float32)  # (T,)
    scaled = a / np.where(peaks > 0, peaks, 1.0)[:, None, None]
    grid = np.rint(scaled * 255.0).astype(np.uint8)  # (T, h, w)
    return {"grid": [h, w], "maps": base64.b64encode(grid.tobytes()).decode("ascii"),
            "peaks": [round(float(p), 4) for p in peaks]}


def hypotheses(result: Any) -> list:
    """The hypotheses a caption result offers: itself first, then its beam alternatives
    (``result.alternatives``, when the search kept them) that say something else."""
    out, seen = [result], {tuple(result.tokens)}
    for alt in getattr(result, "alternatives", None) or []:
        if tuple(alt.tokens) not in seen:
            seen.add(tuple(alt.tokens))
            out.append(alt)
    return out


def caption_item(image: Image.Image, name: str | None, hyps: Sequence[Any],
                 probabilities: Sequence[Sequence[float]] | None = None) -> dict:
    """An explorer item for a captioned image. ``hyps``: objects with ``caption``, ``tokens``
    (the words), ``score`` and ``attention`` (T, h, w), and optionally ``cells`` (hard
    attention's chosen cell per word, outlined on its map), best first (``CaptionResult`` and
    its alternatives; see :func:`hypotheses`). ``probabilities``: each word's probability, one
    list per hypothesis, or None."""
    uri, width, height = image_data_uri(image)
    out = []
    for k, hyp in enumerate(hyps):
        words = list(hyp.tokens)
        probs = None if probabilities is None else [round(float(p), 4) for p in probabilities[k]]
        if probs is not None and len(probs) != len(words):
            raise ValueError(f"{len(probs)} probabilities for {len(words)} words")
        att = np.asarray(hyp.attention, dtype=np.float32).reshape(len(words), *np.shape(hyp.attention)[-2:])
        out.append({"caption": hyp.caption, "score": None if hyp.score is None else round(float(hyp.score), 4),
                    "finished": bool(getattr(hyp, "finished", True)),
                    "words": [{"text": w, "p": None if probs is None else probs[i]} for i, w in enumerate(words)],
                    **encode_maps(att)})
        cells = getattr(hyp, "cells", None)  # hard attention's chosen cell per word, (row, col)
        if cells is not None:
            out[-1]["cells"] = [[int(r), int(c)] for r, c in cells]
    return {"kind": "caption", "name": name or "image", "image": uri, "width": width, "height": height,
            "hypotheses": out}


def vqa_item(image: Image.Image, name: str | None, question: str, answers: Sequence[dict],
             glimpses: np.ndarray | None, warnings: Sequence[str] = ()) -> dict:
    """An explorer item for an answered question: ``answers`` [{"answer", "score"}] best
    first, ``glimpses`` (G, h, w) of the attention fusion or None (concat and mul fusions
    look at the whole grid at once), ``warnings`` the lines the CLI prints on stderr
    (``vqa.api.VQAPrediction.warnings``), shown beside the answers."""
    uri, width, height = image_data_uri(image)
    item = {"kind": "vqa", "name": name or "image", "image": uri, "width": width, "height": height,
            "question": question, "answers": [{"answer": a["answer"], "score": round(float(a["score"]), 4)}
                                              for a in answers], "hypotheses": [], "warnings": list(warnings)}
    if glimpses is not None:
        g = np.asarray(glimpses, dtype=np.float32)
        words = [{"text": f"glimpse {i + 1}" if len(g) > 1 else "attention", "p": None} for i in range(len(g))]
        item["hypotheses"] = [{"caption": question, "score": None, "finished": True, "words": words, **encode_maps(g)}]
    return item


def annotate(item: dict, boxes: Sequence[tuple[str, Sequence[float]]] = (), image_size: tuple[float, float] | None = None,
             trained_on: str | None = None) -> dict:
    """Add to an explorer item what the page shows beside the model's output: the objects'
    ``boxes`` [(label, COCO [x, y, w, h] in pixels of a ``image_size`` (width, height)
    picture)], drawn over the image under a toggle, and what the model was ``trained_on`` (its
    checkpoint's metadata). Boxes travel as fractions of the picture, so any display size fits."""
    if boxes:
        if image_size is None:
            raise ValueError("boxes need the image_size they are measured in")
        width, height = image_size
        item["boxes"] = [{"label": str(label), "x": round(x / width, 5), "y": round(y / height, 5),
                          "w": round(w / width, 5), "h": round(h / height, 5)} for label, (x, y, w, h) in boxes]
    if trained_on:
        item["trained_on"] = str(trained_on)
    return item


def page_data(items: Sequence[dict], server: dict | None = None) -> dict:
    """Everything the page's script reads: the items, the colour maps, the PNGs' drawing
    constants (so both views look alike), and for ``explorer.server`` its settings."""
    luts = {}
    for name in COLOUR_MAPS:
        rgb = colormaps[name](np.linspace(0.0, HEAT_TOP, LUT_SIZE))[:, :3]  # (LUT_SIZE, 3)
        luts[name] = np.rint(rgb * 255).astype(int).ravel().tolist()
    return {"items": list(items), "colormaps": luts, "floor": FLOOR, "opacity": OPACITY, "server": server}


def render_page(items: Sequence[dict], title: str = "Attention explorer", server: dict | None = None) -> str:
    """The HTML page: the template with the data inlined as JSON. ``<`` is escaped inside the
    JSON so that no file name or caption can close the script element."""
    data = json.dumps(page_data(items, server), separators=(",", ":")).replace("<", "\\u003c")
    template = TEMPLATE.read_text(encoding="utf-8")
    return template.replace("__TITLE__", html.escape(title)).replace("/*__DATA__*/{}", data)


def write_report(path: str | os.PathLike, items: Sequence[dict], title: str = "Attention explorer") -> None:
    """Write the self-contained report, atomically. A folder that cannot be written to is the
    user's mistake (one-line UserError)."""
    from captioning.core.errors import UserError

    page = render_page(items, title)
    try:
        with atomic_write(path) as f:
            f.write(page)
    except OSError as e:
        raise UserError(f"{path}: cannot write the report ({e.strerror or e})") from None
