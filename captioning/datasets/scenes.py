"""Emoji scenes: several emoji on one picture, with boxes, captions and questions about them.

Every emoji picture holds one object, so an attention map on it cannot be checked: any blob
looks plausible. A scene holds 2-4 emoji at random positions and sizes (limited overlap) on a
varied background (flat colour, two-colour gradient, smoothed noise), so that a word's or a
question's attention can be scored against the box of the object it names (attention
correctness, Liu et al. 2017; the pointing game, Zhang et al. 2016; see
``captioning.core.grounding``), and relational questions ("what is left of the X?") need more
than pooled features (Santoro et al. 2017, Sort-of-CLEVR). Written in the formats users have::

    out/images/<split>/<image id>.png                         224 x 224 RGB
    out/instances_<split>.json                                COCO instances (pycocotools)
    out/captions_<split>.json                                 COCO captions, 5 references a scene
    out/v2_OpenEnded_mscoco_<split>_questions.json            VQA v2 questions (+ an "images" list)
    out/v2_mscoco_<split>_annotations.json                    VQA v2 annotations

``file_name`` in every file is relative to ``out/images/<split>/``, so ``--images
out/images/<split>`` serves captioning, VQA and the instances alike.

Artwork: the emoji-datasource npm packages (:mod:`captioning.datasets.emoji`). Google Noto and
Twitter Twemoji draw the train / val / test / test_concept scenes; Apple draws only the
``test_style`` scenes (it is not freely licensed: never trained on). Concepts: the emoji
dataset's own concept split (:func:`captioning.datasets.emoji.assign_splits`, same seed), so
the held-out concepts of both datasets agree; from it a manageable subset of distinct,
nameable objects (animals, plants, food, vehicles, sport and game things, instruments, tools,
household things, clothes: 1-2 word names, no skin
tones, drawn by all three vendors), chosen so that no two share a name word. That makes every
name word point at one category, which the word -> box scoring needs ("face" would be
ambiguous between "dog face" and "cat face"). ``test_concept`` scenes each hold at least one
held-out concept, beside seen ones: combinations never seen in training.

Relations are between box centres with a margin: A is left of B when A's centre is more than
:data:`RELATION_MARGIN` of the image width left of B's. A relational question about X is asked
only when exactly one object stands in that relation to X and none is within the margin, so
its answer is unique. The colour of an emoji is the commonest named colour
(:data:`COLOURS`, nearest in RGB) among its opaque, not near-black or near-white pixels, as
that vendor draws it.

Everything is a function of ``--seed``: scene i of a split draws from ``Random("seed/split/i")``,
so any scene can be regenerated alone and the order of generation does not matter.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.core.errors import UserError
from captioning.core.fileio import atomic_path, write_if_changed
from captioning.datasets.emoji import (
    LICENSES,
    VERSION,
    EmojiImage,
    assign_splits,
    list_images,
    load_emoji_json,
    package_name,
)

IMAGE_SIZE = 224
SPLITS = ("train", "val", "test", "test_style", "test_concept")
DEFAULT_SCENES = {"train": 4000, "val": 400, "test": 500, "test_style": 300, "test_concept": 300}
# The scenes' drawing styles: Noto and Twemoji for training (the emoji-datasource packages,
# what the shipped scene models were trained on), Apple's never trained on (test_style). The
# emoji data's other free styles (captioning.datasets.emoji.TRAIN_VENDORS) are not used here.
TRAIN_VENDORS = ("google", "twitter")
STYLE_VENDORS = ("apple",)
# emoji.json subcategories of distinct, nameable things (no places, symbols or buildings)
SUBCATEGORIES = ("animal-", "food-", "plant-", "transport-", "sport", "game", "musical-instrument", "tool",
                 "household", "clothing")
NUM_SEEN = 40  # seen concepts in the subset (train / val / test / test_style draw from these)
NUM_HELD_OUT = 10  # held-out concepts (only in test_concept)
MIN_OBJECTS, MAX_OBJECTS = 2, 4
MIN_SIZE, MAX_SIZE = 44, 96  # emoji side in pixels
MAX_OVERLAP = 0.15  # of the smaller box's area
RELATION_MARGIN = 0.05  # of the image side: centres closer than this are in no relation
BIGGEST_RATIO = 1.4  # "the biggest object" only when it is this much bigger (area) than the next
REFERENCES = 5
COLOURS = {
    "red": (215, 40, 45), "orange": (245, 140, 30), "yellow": (250, 205, 50), "green": (70, 165, 60),
    "blue": (55, 120, 215), "purple": (140, 80, 180), "pink": (240, 150, 185), "brown": (135, 85, 50),
    "gray": (140, 140, 140),
}
RELATIONS = {  # question wording -> (axis, sign): A rel X when sign * (centre_A - centre_X) > margin on axis
    "left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1),
}
QUESTION_TYPES = ("what is left of the", "what is right of the", "what is above the", "what is below the",
                  "how many", "is there a", "what color is the", "what is the biggest object")
RELATIONAL_TYPES = QUESTION_TYPES[:4]
STOPWORDS = {"a", "an", "the", "of", "and", "with", "on", "in"}


@dataclass(frozen=True)
class Concept:
    code: str  # unified code of the concept (emoji.py's unit of the split)
    name: str  # caption text, e.g. "red apple"
    held_out: bool
    renderings: Mapping[str, Path] = field(hash=False, compare=False)  # vendor -> RGBA 64 px PNG


@dataclass
class Placed:
    concept: int  # index into the concept list
    vendor: str
    box: tuple[float, float, float, float]  # COCO [x, y, w, h] of the opaque pixels
    colour: str

    @property
    def centre(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2, y + h / 2

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


# ---------------------------------------------------------------------------------------------
# Concepts


def choose_concepts(entries: list[dict], images: list[EmojiImage], seed: int = 0, subset_seed: int = 0, num_seen: int = NUM_SEEN,
                    num_held_out: int = NUM_HELD_OUT, vendors: Sequence[str] = TRAIN_VENDORS + STYLE_VENDORS) -> list[Concept]:
    """The concept subset (see the module docstring): seen ones first, then held-out ones."""
    splits = assign_splits(images, entries, seed)
    held_out = {im.concept for im in splits["test_concept"]}
    seen = {im.concept for im in splits["train"]}
    by_code = {e["unified"]: e for e in entries}
    drawn: dict[str, dict[str, Path]] = {}
    names: dict[str, str] = {}
    for im in images:
        if im.unified == im.concept:  # the base rendering, never a skin-tone variant
            drawn.setdefault(im.concept, {})[im.vendor] = im.source
            names[im.concept] = im.caption
    eligible = []
    for code in sorted(drawn):
        e, name = by_code.get(code, {}), names[code]
        words = name.split()
        sub = str(e.get("subcategory", ""))
        if (sub.startswith(SUBCATEGORIES) and sub != "transport-sign" and not e.get("skin_variations") and 1 <= len(words) <= 2
                and all(w.isalpha() for w in words) and set(vendors) <= set(drawn[code])):
            eligible.append(code)
    rng = random.Random(subset_seed)
    rng.shuffle(eligible)
    chosen: list[Concept] = []
    used_words: set[str] = set()
    for want_held_out, count in ((False, num_seen), (True, num_held_out)):
        picked = 0
        for code in eligible:
            if picked == count:
                break
            if (code in held_out) != want_held_out or (not want_held_out and code not in seen):
                continue
            words = set(names[code].split()) - STOPWORDS
            if words & used_words:
                continue
            used_words |= words
            chosen.append(Concept(code, names[code], want_held_out, dict(drawn[code])))
            picked += 1
        if picked < count:
            raise UserError(f"only {picked} {'held-out' if want_held_out else 'seen'} concepts fit the scene subset "
                            f"(asked for {count})")
    return chosen


def dominant_colour(rgba: np.ndarray) -> str:
    """Commonest of :data:`COLOURS` among the opaque, not near-black/white pixels of (H, W, 4)."""
    px = rgba[rgba[..., 3] > 200][:, :3].astype(np.float32)  # (n, 3)
    lum = px.mean(1)
    px = px[(lum > 45) & (lum < 235)]
    if len(px) == 0:
        return "black"
    protos = np.array(list(COLOURS.values()), np.float32)  # (K, 3)
    nearest = ((px[:, None, :] - protos[None]) ** 2).sum(-1).argmin(1)
    return list(COLOURS)[np.bincount(nearest, minlength=len(protos)).argmax()]


class Artwork:
    """The RGBA renderings, loaded once, with their colours and resized copies cached."""

    def __init__(self, concepts: Sequence[Concept]):
        self.rgba: dict[tuple[int, str], Image.Image] = {}
        self.colour: dict[tuple[int, str], str] = {}
        for c, concept in enumerate(concepts):
            for vendor, path in concept.renderings.items():
                try:
                    with Image.open(path) as im:
                        rgba = im.convert("RGBA")
                except (OSError, SyntaxError, ValueError) as e:
                    raise UserError(f"{path}: not a readable PNG ({e})") from None
                self.rgba[c, vendor] = rgba
                self.colour[c, vendor] = dominant_colour(np.asarray(rgba))
        self._sized: dict[tuple[int, str, int], tuple[Image.Image, tuple[int, int, int, int]]] = {}

    def sized(self, c: int, vendor: str, size: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
        """The rendering at ``size`` px and the bounding box (l, t, r, b) of its opaque pixels."""
        key = (c, vendor, size)
        if key not in self._sized:
            im = self.rgba[c, vendor].resize((size, size), Image.BICUBIC)
            bbox = im.getchannel("A").point(lambda a: 255 if a > 64 else 0).getbbox() or (0, 0, size, size)
            self._sized[key] = (im, bbox)
        return self._sized[key]


# ---------------------------------------------------------------------------------------------
# One scene


def background(rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """A flat colour, a linear two-colour gradient at a random angle, or smoothed colour noise."""
    kind = rng.choice(("flat", "gradient", "noise"))
    c1 = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    if kind == "flat":
        return Image.new("RGB", (size, size), tuple(int(v) for v in c1))
    if kind == "gradient":
        c2 = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
        t = (xx * np.cos(angle) + yy * np.sin(angle))
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)  # (S, S) in [0, 1]
        a = c1 * (1 - t[..., None]) + c2 * t[..., None]
        return Image.fromarray(a.astype(np.uint8))
    cells = rng.choice((4, 8, 16))
    nrng = np.random.default_rng(rng.getrandbits(32))
    low = c1 + nrng.normal(0, 60, (cells, cells, 3))
    return Image.fromarray(np.clip(low, 0, 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)


def _overlap(a, b) -> float:
    """Intersection area of boxes (l, t, r, b) over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def make_scene(rng: random.Random, art: Artwork, concepts: Sequence[int], vendors: Sequence[str],
               must_include: Sequence[int] = (), size: int = IMAGE_SIZE) -> tuple[Image.Image, list[Placed]]:
    """Compose one scene: 2-4 emoji of ``concepts`` (the same one at most twice; every one of
    ``must_include`` once, when given) by one of ``vendors`` each."""
    n = rng.randint(MIN_OBJECTS, MAX_OBJECTS)
    picks: list[int] = []
    while len(picks) < n - len(must_include[:1]):
        c = rng.choice(concepts)
        if picks.count(c) < 2 and (c not in picks or rng.random() < 0.25):
            picks.append(c)
    picks = list(must_include[:1]) + picks  # placed first, so it always fits
    canvas = background(rng, size).convert("RGBA")
    placed: list[Placed] = []
    boxes: list[tuple[int, int, int, int]] = []
    for c in picks:
        vendor = rng.choice(vendors)
        for _ in range(50):  # rejection sampling; a scene that cannot fit one more keeps fewer
            side = rng.randint(MIN_SIZE, MAX_SIZE)
            x, y = rng.randint(0, size - side), rng.randint(0, size - side)
            im, (l, t, r, b) = art.sized(c, vendor, side)
            box = (x + l, y + t, x + r, y + b)
            if all(_overlap(box, o) <= MAX_OVERLAP for o in boxes):
                canvas.alpha_composite(im, (x, y))
                boxes.append(box)
                placed.append(Placed(c, vendor, (float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])),
                                     art.colour[c, vendor]))
                break
    if must_include and not any(p.concept == must_include[0] for p in placed):
        raise AssertionError("the first pick is placed on an empty canvas")
    return canvas.convert("RGB"), placed


# ---------------------------------------------------------------------------------------------
# Relations, captions, questions


def related(a: Placed, x: Placed, relation: str, size: int = IMAGE_SIZE) -> bool | None:
    """True when ``a`` is ``relation`` (e.g. "left of") ``x``; None when within the margin
    (neither clearly in the relation nor clearly not)."""
    axis, sign = RELATIONS[relation]
    d = sign * (a.centre[axis] - x.centre[axis])
    margin = RELATION_MARGIN * size
    if d > margin:
        return True
    if d < -margin or abs(a.centre[axis] - x.centre[axis]) > margin:
        return False
    return None


def the_one(placed: Sequence[Placed], x: Placed, relation: str) -> Placed | None:
    """The single object in ``relation`` to ``x``, or None when there is none, several, or an
    ambiguous one."""
    hits = []
    for a in placed:
        if a is x:
            continue
        r = related(a, x, relation)
        if r is None:
            return None
        if r:
            hits.append(a)
    return hits[0] if len(hits) == 1 else None


def article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


def plural(name: str) -> str:
    return name + ("es" if name.endswith(("s", "sh", "ch", "x")) else "s")


NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}


def captions_for(rng: random.Random, placed: Sequence[Placed], names: Sequence[str]) -> list[str]:
    """:data:`REFERENCES` different captions naming every object and some relations."""
    counts = Counter(names[p.concept] for p in placed)
    by_x = sorted(placed, key=lambda p: p.centre[0])
    ordered = list(dict.fromkeys(names[p.concept] for p in by_x))  # left to right, distinct

    def phrase(name: str, colour: str | None = None) -> str:
        if counts[name] > 1:
            return f"{NUMBERS[counts[name]]} {plural(name)}"
        return article(f"{colour} {name}" if colour and colour not in name.split() else name)

    def listing(items: list[str]) -> str:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    colour_of = {names[p.concept]: p.colour for p in placed}
    out = [listing([phrase(n) for n in ordered]) + " from left to right",
           listing([phrase(n) for n in reversed(ordered)]) + " from right to left",
           listing([phrase(n, colour_of[n]) for n in rng.sample(ordered, len(ordered))])]
    singles = [p for p in placed if counts[names[p.concept]] == 1]
    pairs = [(a, b, rel) for a in singles for b in singles if a is not b for rel in RELATIONS if related(a, b, rel)]
    rng.shuffle(pairs)
    for a, b, rel in pairs:
        if len(out) == REFERENCES:
            break
        words = {"left of": "to the left of", "right of": "to the right of"}.get(rel, rel)
        rest = [phrase(n) for n in ordered if n not in (names[a.concept], names[b.concept])]
        text = f"{phrase(names[a.concept])} {words} {phrase(names[b.concept])}"
        out.append(text + (" with " + listing(rest) if rest else ""))
    # Too few clear relations (objects in a row, or repeats): other wordings, never a repeat.
    fallbacks = ["a picture showing {}", "a picture with {}", "there are {} in the picture", "{} on a background",
                 "a picture of {}"]
    rng.shuffle(fallbacks)
    for template in fallbacks[:REFERENCES - len(out)]:
        out.append(template.format(listing([phrase(n) for n in rng.sample(ordered, len(ordered))])))
    return out


@dataclass
class QA:
    question: str
    answer: str
    question_type: str
    answer_type: str
    about: list[int]  # indices into the scene's objects whose boxes the answer rests on


def questions_for(rng: random.Random, placed: Sequence[Placed], names: Sequence[str], pool: Sequence[int],
                  per_scene: int = 8) -> list[QA]:
    """Up to ``per_scene`` questions, at most one of each type where possible, in random order.
    ``pool`` is the concept indices a negative "is there" / "how many" may name."""
    counts = Counter(p.concept for p in placed)
    singles = [i for i, p in enumerate(placed) if counts[p.concept] == 1]
    qs: list[QA] = []
    for rel in RELATIONS:
        options = [(i, the_one(placed, placed[i], rel)) for i in singles]
        options = [(i, a) for i, a in options if a is not None]
        if options:
            i, a = rng.choice(options)
            qs.append(QA(f"what is {rel} the {names[placed[i].concept]}?", names[a.concept],
                         f"what is {rel} the", "other", [placed.index(a)]))
    present = sorted(counts)
    c = rng.choice(present) if rng.random() < 0.7 else rng.choice(pool)
    qs.append(QA(f"how many {plural(names[c])} are there?", str(counts.get(c, 0)), "how many", "number",
                 [i for i, p in enumerate(placed) if p.concept == c]))
    absent = [c for c in pool if c not in counts]
    c = rng.choice(present) if rng.random() < 0.5 or not absent else rng.choice(absent)
    qs.append(QA(f"is there {article(names[c])}?", "yes" if c in counts else "no", "is there a", "yes/no",
                 [i for i, p in enumerate(placed) if p.concept == c]))
    if singles:
        i = rng.choice(singles)
        qs.append(QA(f"what color is the {names[placed[i].concept]}?", placed[i].colour, "what color is the", "other", [i]))
    areas = sorted(((p.area, i) for i, p in enumerate(placed)), reverse=True)
    if len(areas) > 1 and areas[0][0] >= BIGGEST_RATIO * areas[1][0]:
        i = areas[0][1]
        qs.append(QA("what is the biggest object?", names[placed[i].concept], "what is the biggest object", "other", [i]))
    rng.shuffle(qs)
    return qs[:per_scene]


# ---------------------------------------------------------------------------------------------
# Splits and files


@dataclass
class SceneSummary:
    split: str
    scenes: int
    objects: int
    questions: int
    seconds: float

    def __str__(self) -> str:
        return (f"{self.split}: {self.scenes:,} scenes, {self.objects:,} objects, {self.questions:,} questions "
                f"({self.seconds:.1f} s)")


def split_id(split: str) -> int:
    return SPLITS.index(split) + 1


def build_split(split: str, n: int, concepts: Sequence[Concept], art: Artwork, out_dir: Path, seed: int) -> SceneSummary:
    start = time.perf_counter()
    seen = [i for i, c in enumerate(concepts) if not c.held_out]
    held = [i for i, c in enumerate(concepts) if c.held_out]
    vendors = list(STYLE_VENDORS) if split == "test_style" else list(TRAIN_VENDORS)
    names = [c.name for c in concepts]
    pool = seen + held if split == "test_concept" else seen
    image_dir = out_dir / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, instances, captions, questions, annotations = [], [], [], [], []
    for k in range(n):
        rng = random.Random(f"{seed}/{split}/{k}")
        image_id = split_id(split) * 1_000_000 + k + 1
        must = [rng.choice(held)] if split == "test_concept" else []
        picture, placed = make_scene(rng, art, pool, vendors, must)
        file_name = f"{image_id}.png"
        with atomic_path(image_dir / file_name) as tmp:
            picture.save(tmp, format="PNG", compress_level=1)
        images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for j, p in enumerate(placed):
            instances.append({"id": image_id * 10 + j, "image_id": image_id, "category_id": p.concept + 1,
                              "bbox": [round(v, 1) for v in p.box], "area": round(p.area, 1), "iscrowd": 0,
                              "vendor": p.vendor, "color": p.colour})
        for j, text in enumerate(captions_for(rng, placed, names)):
            captions.append({"id": image_id * 10 + j, "image_id": image_id, "caption": text})
        for j, qa in enumerate(questions_for(rng, placed, names, pool)):
            qid = image_id * 1000 + j
            questions.append({"image_id": image_id, "question": qa.question, "question_id": qid})
            annotations.append({"question_id": qid, "image_id": image_id, "question_type": qa.question_type,
                                "answer_type": qa.answer_type, "multiple_choice_answer": qa.answer,
                                "answers": [{"answer": qa.answer, "answer_confidence": "yes", "answer_id": a}
                                            for a in range(1, 11)],
                                "instance_ids": [image_id * 10 + i for i in qa.about]})
    categories = [{"id": i + 1, "name": c.name, "supercategory": "emoji", "unified": c.code, "held_out": c.held_out}
                  for i, c in enumerate(concepts)]
    info = {"description": f"Emoji scenes, split {split}: emoji-datasource {VERSION} ({', '.join(vendors)}), seed {seed}",
            "version": VERSION, "year": 2026, "contributor": "iamcal/emoji-data; vendors as licensed",
            "url": "https://github.com/iamcal/emoji-data", "date_created": ""}
    licenses = [{"id": i + 1, "name": LICENSES[v][0], "url": LICENSES[v][1]} for i, v in enumerate(vendors)]
    coco = {"info": info, "licenses": licenses, "images": images}
    _write(out_dir / f"instances_{split}.json", {**coco, "annotations": instances, "categories": categories})
    _write(out_dir / f"captions_{split}.json", {**coco, "annotations": captions})
    header = {"info": info, "license": licenses[0], "data_type": "emoji_scenes", "data_subtype": split}
    _write(out_dir / f"v2_OpenEnded_mscoco_{split}_questions.json",
           {**header, "task_type": "Open-Ended", "images": [{"id": im["id"], "file_name": im["file_name"]} for im in images],
            "questions": questions})
    _write(out_dir / f"v2_mscoco_{split}_annotations.json", {**header, "annotations": annotations})
    return SceneSummary(split, n, len(instances), len(questions), time.perf_counter() - start)


def grid_picture(out_dir: str | os.PathLike, split: str, path: str | os.PathLike, n: int = 12, columns: int = 4) -> None:
    """A picture of the first ``n`` scenes of ``split`` with their boxes, category names and first
    caption (for the docs)."""
    from PIL import ImageDraw

    out_dir = Path(out_dir)
    inst = json.loads((out_dir / f"instances_{split}.json").read_text())
    caps = json.loads((out_dir / f"captions_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    first_caption: dict[int, str] = {}
    for a in caps["annotations"]:
        first_caption.setdefault(a["image_id"], a["caption"])
    images = inst["images"][:n]
    cell_h = IMAGE_SIZE + 28
    sheet = Image.new("RGB", (columns * IMAGE_SIZE, -(-len(images) // columns) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, im in enumerate(images):
        x0, y0 = (k % columns) * IMAGE_SIZE, (k // columns) * cell_h
        with Image.open(out_dir / "images" / split / im["file_name"]) as pic:
            sheet.paste(pic.convert("RGB"), (x0, y0))
        for a in (a for a in inst["annotations"] if a["image_id"] == im["id"]):
            x, y, w, h = a["bbox"]
            draw.rectangle((x0 + x, y0 + y, x0 + x + w, y0 + y + h), outline=(255, 0, 0), width=2)
            draw.text((x0 + x + 2, y0 + y + 1), names[a["category_id"]], fill=(255, 0, 0))
        text = first_caption.get(im["id"], "")
        draw.text((x0 + 3, y0 + IMAGE_SIZE + 2), text[:40], fill=(0, 0, 0))
        draw.text((x0 + 3, y0 + IMAGE_SIZE + 14), text[40:80], fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def _write(path: Path, obj) -> None:
    write_if_changed(path, json.dumps(obj, separators=(",", ":")) + "\n")


def check_counts(counts: Mapping[str, int]) -> dict[str, int]:
    out = {}
    for split, n in counts.items():
        if split not in SPLITS:
            raise UserError(f"unknown scenes split {split!r} (choose from {', '.join(SPLITS)})")
        if not 0 <= int(n) <= 1_000_000:
            raise UserError(f"{split}: {n} scenes is out of range (0 to 1,000,000)")
        out[split] = int(n)
    return out


def build_scenes(package_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                 counts: Mapping[str, int] = DEFAULT_SCENES, seed: int = 0, concept_seed: int = 0,
                 num_seen: int = NUM_SEEN, num_held_out: int = NUM_HELD_OUT) -> list[SceneSummary]:
    """Write every split of ``counts`` (split -> number of scenes; 0 skips one) from extracted
    packages ``{vendor: folder}`` (google, twitter, apple). ``concept_seed`` is the emoji
    dataset's split seed (0 there by default), ``seed`` draws the concept subset and the scenes."""
    counts = check_counts(counts)
    missing = [v for v in TRAIN_VENDORS + STYLE_VENDORS if v not in package_dirs]
    if missing:
        raise UserError(f"the scenes need the {', '.join(missing)} emoji package(s)")
    entries = load_emoji_json(package_dirs[TRAIN_VENDORS[0]])
    images = [im for v in TRAIN_VENDORS + STYLE_VENDORS for im in list_images(entries, v, package_dirs[v])]
    concepts = choose_concepts(entries, images, concept_seed, seed, num_seen, num_held_out)
    art = Artwork(concepts)
    out_dir = Path(out_dir)
    return [build_split(split, n, concepts, art, out_dir, seed) for split, n in counts.items() if n]


def package_dirs_in(cache_dir: str | os.PathLike, version: str = VERSION) -> dict[str, Path]:
    """The extracted packages ``scripts/prepare_emoji.py`` left in its ``.cache`` folder."""
    dirs = {v: Path(cache_dir) / f"{package_name(v)}-{version}" for v in TRAIN_VENDORS + STYLE_VENDORS}
    absent = [str(d) for d in dirs.values() if not (d / "emoji.json").exists()]
    if absent:
        raise UserError(f"no extracted emoji package at {absent[0]} (run scripts/prepare_emoji.py "
                        "--vendors google,twitter,apple first, or pass --cache)")
    return dirs
