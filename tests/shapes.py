"""A tiny synthetic dataset for the tests: one coloured shape per image, templated captions.

Written to disk in the real formats (COCO captions JSON, VQA v2 questions/annotations JSON,
PNG files), so the tests read it through the same loaders users run on COCO and VQA v2.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220)}
SHAPES = ("circle", "square", "triangle")
SIDES = ("left", "right")


def draw(color: str, shape: str, side: str, size: int = 96, rng: random.Random | None = None) -> Image.Image:
    rng = rng or random.Random(0)
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    r = size // 5 + rng.randint(-2, 2)
    cx = (size // 4 if side == "left" else 3 * size // 4) + rng.randint(-3, 3)
    cy = size // 2 + rng.randint(-8, 8)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        d.rectangle(box, fill=COLORS[color])
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[color])
    return im


def combos():
    return [(c, s, side) for c in COLORS for s in SHAPES for side in SIDES]


def make_caption_dataset(root: Path, n_images: int = 18, seed: int = 0, name: str = "train", size: int = 96) -> tuple[Path, Path]:
    """Images under root/images, captions in root/captions_<name>.json (COCO format).
    Returns (annotation file, image folder)."""
    rng = random.Random(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    all_combos = combos()
    for i in range(n_images):
        color, shape, side = all_combos[i % len(all_combos)]
        image_id = 1000 * (seed + 1) + i
        fname = f"{name}_{image_id}.png"
        draw(color, shape, side, size, rng).save(img_dir / fname)
        images.append({"id": image_id, "file_name": fname, "width": size, "height": size})
        for j, template in enumerate(("a {c} {s} on the {side}", "{c} {s} on the {side}")):
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "caption": template.format(c=color, s=shape, side=side)})
    ann_file = root / f"captions_{name}.json"
    ann_file.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns,
                                    "type": "captions"}))
    return ann_file, img_dir
