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
        for template in ("a {c} {s} on the {side}", "{c} {s} on the {side}"):
            anns.append({"id": len(anns) + 1, "image_id": image_id,
                         "caption": template.format(c=color, s=shape, side=side)})
    ann_file = root / f"captions_{name}.json"
    ann_file.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns,
                                    "type": "captions"}))
    return ann_file, img_dir


# (question, question_type, answer_type, answer of (color, shape, side)): the VQA questions.
VQA_QUESTIONS = (
    ("what color is the shape?", "what color is the", "other", lambda c, s, side: c),
    ("what shape is it?", "what shape is", "other", lambda c, s, side: s),
    ("is the shape on the left?", "is the", "yes/no", lambda c, s, side: "yes" if side == "left" else "no"),
)


def make_vqa_dataset(root: Path, n_images: int = 18, seed: int = 0, split: str = "train", naming: str = "images",
                     size: int = 64) -> tuple[Path, Path, Path]:
    """VQA v2 files for the shapes: ``root/v2_OpenEnded_mscoco_<split>_questions.json``,
    ``root/v2_mscoco_<split>_annotations.json`` and images under ``root/images_<split>``.

    naming "images": PNGs with free names, listed in the questions file's ``images`` list (as
    ``vqa.datasets.easy_vqa`` writes them); "coco": JPEGs named ``COCO_<split>2014_<id:012d>.jpg``
    and found by that pattern from the file's ``data_subtype``, with no ``images`` list.
    Ten human answers per question; one of the ten disagrees on the yes/no questions.
    Returns (questions file, annotations file, image folder).
    """
    if naming not in ("images", "coco"):
        raise ValueError(f"naming must be 'images' or 'coco', not {naming!r}")
    rng = random.Random(seed)
    subtype = f"{split}2014"
    img_dir = root / f"images_{split}"
    img_dir.mkdir(parents=True, exist_ok=True)
    all_combos = combos()
    images, questions, annotations = [], [], []
    for i in range(n_images):
        color, shape, side = all_combos[i % len(all_combos)]
        image_id = 1000 * (seed + 1) + i
        im = draw(color, shape, side, size, rng)
        if naming == "coco":
            im.save(img_dir / f"COCO_{subtype}_{image_id:012d}.jpg", quality=95)
        else:
            fname = f"{split}_{image_id}.png"
            im.save(img_dir / fname)
            images.append({"id": image_id, "file_name": fname})
        for k, (text, qtype, atype, answer_of) in enumerate(VQA_QUESTIONS):
            qid = image_id * 1000 + k  # VQA v2's scheme
            answer = answer_of(color, shape, side)
            humans = [answer] * 10
            if atype == "yes/no":
                humans[-1] = "no" if answer == "yes" else "yes"
            questions.append({"image_id": image_id, "question": text, "question_id": qid})
            annotations.append({"question_id": qid, "image_id": image_id, "question_type": qtype, "answer_type": atype,
                                "multiple_choice_answer": answer,
                                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                                            for j, a in enumerate(humans)]})
    header = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": subtype}
    qfile = root / f"v2_OpenEnded_mscoco_{split}_questions.json"
    afile = root / f"v2_mscoco_{split}_annotations.json"
    qobj = {**header, "task_type": "Open-Ended", "questions": questions}
    if naming == "images":
        qobj["images"] = images
    qfile.write_text(json.dumps(qobj))
    afile.write_text(json.dumps({**header, "annotations": annotations}))
    return qfile, afile, img_dir
