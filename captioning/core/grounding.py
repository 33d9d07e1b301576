"""Attention maps scored against object boxes: attention correctness and the pointing game.

A map that looks plausible is not a map that is right. With the boxes of the objects in a
picture (COCO instances, e.g. those ``captioning.datasets.scenes`` writes) a map over the
encoder's (h, w) grid can be scored:

* **attention correctness** (Liu et al. 2017, "Attention Correctness in Neural Image
  Captioning", AAAI): the share of the map's mass that falls inside the object's region. A
  grid cell counts with the fraction of its area the region covers, so a cell half inside the
  box contributes half its weight: ``sum_c alpha_c * cover_c / sum_c alpha_c``.
* **pointing game** (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"):
  a hit when the map's maximum points inside the region. Here the point of a cell is its
  centre, and a hit is the centre of the argmax cell lying inside one of the object's boxes
  (edges included). When several cells tie for the maximum (a uniform map ties everywhere)
  the score is the share of tied cells whose centre is inside: the expected hit rate of
  breaking the tie at random.

The region of an object is the union of the boxes of its category in the picture (a word
names a category, and "two cows" has two boxes). Cells tile the image evenly: cell (i, j) of
an (h, w) grid on a W x H picture covers ``[j W/w, (j+1) W/w) x [i H/h, (i+1) H/h)``, as the
CNN's grid does up to its receptive fields. The same two scores of a uniform map are the
baseline every model must beat: its correctness is the region's share of the picture.

:class:`GroundingTally` accumulates both (and the uniform baseline) over many maps;
:func:`load_instances` reads the boxes through pycocotools; :func:`word_categories` maps
caption words to the categories whose names they are part of.

The same boxes can also teach the maps (:class:`AttentionTargets`, training's
``--attention-supervision``): Liu et al. 2017's supervised attention, a cross-entropy between
each object word's map and its region's cover, there from Flickr30k Entities' phrase boxes,
here from the instances of the training pictures.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from captioning.core.errors import UserError
from captioning.core.fileio import read_json

Box = Sequence[float]  # COCO [x, y, width, height] in pixels
STOPWORDS = frozenset({"a", "an", "the", "of", "and", "with", "on", "in", "to", "at", "by", "for"})


def cell_coverage(boxes: Iterable[Box], grid: tuple[int, int], image_size: tuple[float, float]) -> np.ndarray:
    """(h, w) share of each grid cell's area covered by the union of ``boxes`` (each clipped to
    the picture). ``image_size`` is (width, height). Exact: the plane is cut along every box and
    cell edge, and each elementary rectangle's area goes to the cell it lies in."""
    h, w = grid
    width, height = image_size
    rects = []
    for x, y, bw, bh in boxes:
        x0, y0 = max(0.0, float(x)), max(0.0, float(y))
        x1, y1 = min(float(width), float(x) + float(bw)), min(float(height), float(y) + float(bh))
        if x1 > x0 and y1 > y0:
            rects.append((x0, y0, x1, y1))
    cover = np.zeros((h, w))
    if not rects:
        return cover
    r = np.array(rects)  # (R, 4)
    xs = np.unique(np.concatenate([r[:, [0, 2]].ravel(), np.linspace(0, width, w + 1)]))
    ys = np.unique(np.concatenate([r[:, [1, 3]].ravel(), np.linspace(0, height, h + 1)]))
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2  # centres of the elementary pieces
    inside = ((r[:, None, None, 0] <= cx[None, None, :]) & (cx[None, None, :] <= r[:, None, None, 2])
              & (r[:, None, None, 1] <= cy[None, :, None]) & (cy[None, :, None] <= r[:, None, None, 3])).any(0)  # (Y, X)
    area = np.outer(np.diff(ys), np.diff(xs)) * inside  # (Y, X)
    col = np.minimum((cx * w / width).astype(int), w - 1)
    row = np.minimum((cy * h / height).astype(int), h - 1)
    np.add.at(cover, (row[:, None].repeat(len(cx), 1), col[None, :].repeat(len(cy), 0)), area)
    return cover / ((width / w) * (height / h))


def attention_correctness(alpha: np.ndarray, boxes: Iterable[Box], image_size: tuple[float, float]) -> float:
    """Share of the (h, w) map's mass inside the union of ``boxes`` (cells weighted by cover)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    return _correctness(alpha, cell_coverage(boxes, alpha.shape, image_size))


def _correctness(alpha: np.ndarray, cover: np.ndarray) -> float:
    """:func:`attention_correctness` given the region's (h, w) ``cover`` of the map's grid."""
    total = alpha.sum()
    if total <= 0:
        raise ValueError("an attention map with no mass")
    return float((alpha * cover).sum() / total)


def pointing_hit(alpha: np.ndarray, boxes: Iterable[Box], image_size: tuple[float, float]) -> float:
    """1.0 when the centre of the map's argmax cell lies inside one of ``boxes``, 0.0 when not;
    with ties, the share of the tied cells whose centre does (see the module docstring)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    h, w = alpha.shape
    width, height = image_size
    top = np.argwhere(alpha >= alpha.max() - 1e-12 * max(abs(alpha.max()), 1.0))  # (n, 2) rows, cols
    px, py = (top[:, 1] + 0.5) * width / w, (top[:, 0] + 0.5) * height / h
    inside = np.zeros(len(top), dtype=bool)
    for x, y, bw, bh in boxes:
        inside |= (x <= px) & (px <= x + bw) & (y <= py) & (py <= y + bh)
    return float(inside.mean())


@dataclass
class GroundingScore:
    count: int  # maps scored
    correctness: float  # mean attention correctness
    pointing: float  # pointing-game accuracy (0-1)
    uniform_correctness: float  # the same for a uniform map over the same grid and boxes
    uniform_pointing: float

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("count", "correctness", "pointing", "uniform_correctness", "uniform_pointing")}


@dataclass
class GroundingTally:
    """Sums of both scores, for a model's maps and for a uniform map, over many (map, boxes)."""

    sums: np.ndarray = field(default_factory=lambda: np.zeros(4))
    count: int = 0

    def add(self, alpha: np.ndarray, boxes: Sequence[Box], image_size: tuple[float, float]) -> None:
        alpha = np.asarray(alpha, dtype=np.float64)
        uniform = np.ones_like(alpha)
        cover = cell_coverage(boxes, alpha.shape, image_size)  # (h, w): one cover for both maps
        self.sums += [_correctness(alpha, cover), pointing_hit(alpha, boxes, image_size),
                      _correctness(uniform, cover), pointing_hit(uniform, boxes, image_size)]
        self.count += 1

    def score(self) -> GroundingScore:
        means = self.sums / max(self.count, 1)
        return GroundingScore(self.count, *map(float, means))


# ---------------------------------------------------------------------------------------------
# Boxes and names


@dataclass
class Instances:
    categories: dict[int, str]  # category id -> name
    boxes: dict[int, dict[int, list[list[float]]]]  # image id -> category id -> boxes
    by_id: dict[int, tuple[int, int, list[float]]]  # annotation id -> (image id, category id, box)
    sizes: dict[int, tuple[int, int]]  # image id -> (width, height)
    file_names: dict[str, int] = field(default_factory=dict)  # file name -> image id

    def labelled_boxes(self, image_id: int) -> list[tuple[str, list[float]]]:
        """[(category name, box)] of every object in the picture."""
        return [(self.categories[c], box) for c, boxes in self.boxes.get(image_id, {}).items() for box in boxes]


def load_instances(path: str | os.PathLike) -> Instances:
    """Boxes of a COCO instances file (``instances_val2014.json`` format), via pycocotools."""
    from pycocotools.coco import COCO

    read_json(path, "COCO instances file")  # a clear error before pycocotools asserts
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            coco = COCO(str(path))
        categories = {int(c["id"]): str(c["name"]) for c in coco.dataset["categories"]}
        sizes = {int(i["id"]): (int(i["width"]), int(i["height"])) for i in coco.dataset["images"]}
        boxes: dict[int, dict[int, list[list[float]]]] = {i: {} for i in sizes}
        by_id = {}
        for a in coco.dataset["annotations"]:
            image_id, cat, box = int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]
            boxes.setdefault(image_id, {}).setdefault(cat, []).append(box)
            by_id[int(a["id"])] = (image_id, cat, box)
    except (KeyError, TypeError, ValueError, AssertionError) as e:
        raise UserError(f"{path}: not in COCO instances format ({type(e).__name__}: {e})") from None
    names = {str(i["file_name"]): int(i["id"]) for i in coco.dataset["images"] if "file_name" in i}
    return Instances(categories, boxes, by_id, sizes, names)


def word_categories(categories: Mapping[int, str], stopwords: frozenset[str] = STOPWORDS) -> dict[str, int]:
    """Caption word -> the category whose name holds it, for words in exactly one category
    name (a word shared by two names, like COCO's "dining table" / "table", points at neither),
    stop words left out. Names are split on anything not a letter or digit, lowercased."""
    owners: dict[str, set[int]] = {}
    for cat, name in categories.items():
        for word in re.findall(r"[a-z0-9]+", name.lower()):
            if word not in stopwords:
                owners.setdefault(word, set()).add(cat)
    return {word: next(iter(cats)) for word, cats in owners.items() if len(cats) == 1}


def score_caption_words(tally: GroundingTally, tokens: Sequence[str], alphas: np.ndarray,
                        image_boxes: Mapping[int, list[list[float]]], image_size: tuple[float, float],
                        words: Mapping[str, int]) -> int:
    """Add to ``tally`` every generated word (``tokens`` with their (T, h, w) ``alphas``) that
    names a category present in the picture, scored against that category's boxes. Returns
    how many words were scored."""
    n = 0
    for token, alpha in zip(tokens, alphas):
        cat = words.get(token.lower())
        if cat is not None and image_boxes.get(cat):
            tally.add(alpha, image_boxes[cat], image_size)
            n += 1
    return n


def ground_captions(instances: Instances, attention: Mapping[int, tuple[Sequence[str], np.ndarray]]) -> GroundingScore:
    """Score generated captions' maps ({image_id: (words, (T, h, w) maps)}) against the boxes:
    every word naming a category present in its picture (:func:`word_categories`)."""
    words = word_categories(instances.categories)
    tally = GroundingTally()
    for image_id, (tokens, alphas) in attention.items():
        if image_id not in instances.sizes:
            raise UserError(f"image {image_id} is not in the instances file: is it the same split?")
        score_caption_words(tally, tokens, alphas, instances.boxes.get(image_id, {}), instances.sizes[image_id], words)
    return tally.score()


def flat_scores(score: GroundingScore, prefix: str = "") -> dict[str, float]:
    """The score as flat ``{name: number}`` entries for a metrics table."""
    return {f"{prefix}attention_correctness": score.correctness, f"{prefix}pointing": score.pointing,
            f"{prefix}uniform_attention_correctness": score.uniform_correctness,
            f"{prefix}uniform_pointing": score.uniform_pointing, f"{prefix}grounded_maps": float(score.count)}


def ground_questions(instances: Instances, annotations: Sequence[Mapping],
                     attention: Mapping[int, np.ndarray]) -> dict[str, list[GroundingScore]]:
    """Score the glimpses ({question_id: (G, h, w)}) of the questions about one object: those
    whose annotation carries ``instance_ids`` (an extension of VQA v2 that
    ``captioning.datasets.scenes`` writes: the instances the answer rests on) naming exactly
    one. Returns {question type, and "all": one score per glimpse}."""
    tallies: dict[str, list[GroundingTally]] = {}
    for a in annotations:
        ids = a.get("instance_ids") or []
        maps = attention.get(a["question_id"])
        if len(ids) != 1 or maps is None:
            continue
        if ids[0] not in instances.by_id:
            raise UserError(f"question {a['question_id']}: instance {ids[0]} is not in the instances file")
        image_id, _, box = instances.by_id[ids[0]]
        for key in ("all", str(a.get("question_type", "?"))):
            glimpses = tallies.setdefault(key, [GroundingTally() for _ in range(len(maps))])
            for tally, alpha in zip(glimpses, maps):
                tally.add(alpha, [box], instances.sizes[image_id])
    return {k: [t.score() for t in v] for k, v in tallies.items()}


# ---------------------------------------------------------------------------------------------
# Boxes as attention targets (training)


class AttentionTargets:
    """Where each object word of a training caption should look, from the boxes of its picture.

    A vocabulary word that names a category (:func:`word_categories`, the rule the scores
    above use) gets, in a picture holding that category, the target map
    ``cover**power / sum(cover**power)`` over the model's (h, w) grid (:func:`cell_coverage`
    of the category's boxes); other words, and object words whose category the picture lacks,
    get none. ``power`` 1 is the region itself; a larger one weighs the cells the box fills
    over those it clips (the map that fits the target best scores a correctness of
    ``sum(cover**(power+1)) / sum(cover**power)``). Only present categories are stored per
    picture, so COCO-sized data stays small."""

    def __init__(self, instances: Instances, vocab_words: Sequence[str], grid: tuple[int, int], power: float = 1.0):
        words = word_categories(instances.categories)
        self.categories = sorted(instances.categories)
        row = {c: k for k, c in enumerate(self.categories)}
        # (V,) word id -> category row, -1 for words that name none
        self.word_category = torch.tensor([row[words[w.lower()]] if w.lower() in words else -1 for w in vocab_words])
        self.cells = grid[0] * grid[1]
        self.maps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # image id -> (rows (k,), targets (k, P))
        for image_id, by_category in instances.boxes.items():
            rows, maps = [], []
            for cat, boxes in by_category.items():
                cover = cell_coverage(boxes, grid, instances.sizes[image_id]).ravel() ** power
                if cover.sum() > 0:
                    rows.append(row[cat])
                    maps.append(cover / cover.sum())
            if rows:
                self.maps[image_id] = (torch.tensor(rows), torch.tensor(np.stack(maps), dtype=torch.float32))

    def __call__(self, captions: torch.Tensor, image_index: torch.Tensor,
                 image_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions (M, L) ``<start> w1 .. <end>`` padded, image_index (M,) into ``image_ids``
        (B,) -> the targets (M, L-1, P) of the predicted words ``captions[:, 1:]`` and the mask
        (M, L-1) of the words that have one."""
        dev = captions.device
        per_image = torch.zeros(len(image_ids), len(self.categories), self.cells)  # (B, C, P)
        for b, image_id in enumerate(image_ids):
            if image_id in self.maps:
                rows, maps = self.maps[image_id]
                per_image[b, rows] = maps
        per_image = per_image.to(dev)
        category = self.word_category.to(dev)[captions[:, 1:]]  # (M, L-1), -1: no object word
        target = per_image[image_index.unsqueeze(1).expand_as(category), category.clamp_min(0)]  # (M, L-1, P)
        return target, (category >= 0) & (target.sum(-1) > 0)


def attention_supervision_loss(alphas: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked words of the cross-entropy ``-sum_i target_i log alpha_i`` between
    each map alphas (M, L-1, P) and its target (Liu et al. 2017, eq. 7); 0 without such words."""
    if not mask.any():
        return alphas.new_zeros((), dtype=torch.float32)
    logp = alphas.float().clamp_min(1e-8).log()  # (M, L-1, P)
    return -(target * logp).sum(-1)[mask].mean()
