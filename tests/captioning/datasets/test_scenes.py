"""captioning.datasets.scenes on tiny fake emoji-datasource packages: no npm, no network."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools.coco import COCO

from captioning.datasets import scenes
from captioning.datasets.scenes import (
    COLOURS,
    RELATIONS,
    SPLITS,
    build_scenes,
    dominant_colour,
)
from tests.conftest import load_script

N_CONCEPTS = 40
COUNTS = {"train": 24, "val": 4, "test": 6, "test_style": 4, "test_concept": 6}


def _name(i: int) -> str:  # distinct one-word names of letters only
    return "obj" + chr(97 + i // 26) + chr(97 + i % 26)


def make_packages(root: Path) -> dict[str, Path]:
    entries = [{"name": _name(i).upper(), "unified": f"1F{0x400 + i:03X}", "image": f"1f{0x400 + i:03x}.png",
                "short_name": _name(i), "category": "Animals & Nature", "subcategory": "animal-mammal",
                **{f"has_img_{v}": True for v in ("google", "twitter", "apple", "facebook")}}
               for i in range(N_CONCEPTS)]
    colours = list(COLOURS.values())
    dirs = {}
    for v, vendor in enumerate(("google", "twitter", "apple")):
        d = root / f"emoji-datasource-{vendor}-16.0.0"
        (d / "img" / vendor / "64").mkdir(parents=True)
        (d / "emoji.json").write_text(json.dumps(entries))
        for i, e in enumerate(entries):
            im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
            ImageDraw.Draw(im).ellipse((4 + v, 8, 58, 60 - v), fill=(*colours[(i + v) % len(colours)], 255))
            im.save(d / "img" / vendor / "64" / e["image"])
        dirs[vendor] = d
    return dirs


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    return make_packages(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="module")
def built(packages, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    build_scenes(packages, out, COUNTS, seed=3, num_seen=8, num_held_out=3)
    return out


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_pycocotools_reads_every_split_and_boxes_lie_inside(built):
    for split in SPLITS:
        inst, caps = _coco(built / f"instances_{split}.json"), _coco(built / f"captions_{split}.json")
        assert len(inst.getImgIds()) == COUNTS[split] == len(caps.getImgIds())
        for img in inst.loadImgs(inst.getImgIds()):
            anns = inst.loadAnns(inst.getAnnIds(imgIds=img["id"]))
            assert 2 <= len(anns) <= 4
            with Image.open(built / "images" / split / img["file_name"]) as pic:
                assert pic.size == (img["width"], img["height"]) == (224, 224) and pic.mode == "RGB"
            for a in anns:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 224 and y + h <= 224
            refs = [a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=img["id"]))]
            assert len(refs) == scenes.REFERENCES and len(set(refs)) == len(refs)
            names = {inst.cats[a["category_id"]]["name"] for a in anns}
            assert all(all(n in r for n in names) for r in refs)  # every reference names every object


def test_same_seed_same_files_other_seed_other_scenes(packages, built, tmp_path):
    again = tmp_path / "again"
    build_scenes(packages, again, {"train": COUNTS["train"]}, seed=3, num_seen=8, num_held_out=3)
    for name in ("instances_train.json", "captions_train.json", "v2_mscoco_train_annotations.json"):
        assert (again / name).read_bytes() == (built / name).read_bytes()
    pictures = sorted(p.name for p in (built / "images" / "train").iterdir())
    assert pictures == sorted(p.name for p in (again / "images" / "train").iterdir())
    assert all((again / "images" / "train" / n).read_bytes() == (built / "images" / "train" / n).read_bytes()
               for n in pictures)
    other = tmp_path / "other"
    build_scenes(packages, other, {"train": COUNTS["train"]}, seed=4, num_seen=8, num_held_out=3)
    assert (other / "instances_train.json").read_bytes() != (built / "instances_train.json").read_bytes()


def test_held_out_concepts_and_styles_stay_in_their_splits(built):
    cats = json.loads((built / "instances_train.json").read_text())["categories"]
    held = {c["id"] for c in cats if c["held_out"]}
    assert len(held) == 3 and len(cats) == 11
    for split in SPLITS:
        inst = json.loads((built / f"instances_{split}.json").read_text())
        per_image: dict[int, set[int]] = {}
        for a in inst["annotations"]:
            per_image.setdefault(a["image_id"], set()).add(a["category_id"])
            assert a["vendor"] in (("apple",) if split == "test_style" else ("google", "twitter"))
        if split == "test_concept":
            assert all(cs & held for cs in per_image.values())
        else:
            assert not any(cs & held for cs in per_image.values())


def _centre(box):
    return box[0] + box[2] / 2, box[1] + box[3] / 2


def test_answers_agree_with_the_boxes(built):
    from vqa.data import load_vqa  # the project's own VQA v2 loader reads the files

    for split in SPLITS:
        loaded = load_vqa(built / f"v2_OpenEnded_mscoco_{split}_questions.json",
                          built / f"v2_mscoco_{split}_annotations.json", built / "images" / split)
        assert loaded.num_questions > 0
        inst = json.loads((built / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in inst["categories"]}
        objects: dict[int, list[dict]] = {}
        for a in inst["annotations"]:
            objects.setdefault(a["image_id"], []).append(a)
        texts = {q["question_id"]: q["question"] for q in loaded.questions}
        for ann in loaded.annotations:
            objs, q, answer = objects[ann["image_id"]], texts[ann["question_id"]], ann["multiple_choice_answer"]
            about = [o for o in objs if o["id"] in ann["instance_ids"]]
            counts = Counter(names[o["category_id"]] for o in objs)
            assert len({a["answer"] for a in ann["answers"]}) == 1 and len(ann["answers"]) == 10
            qt = ann["question_type"]
            assert q.startswith(qt) and qt in scenes.QUESTION_TYPES
            if qt in scenes.RELATIONAL_TYPES:
                rel = qt[len("what is "):-len(" the")]
                x_name = q[len(qt) + 1:-1]
                assert counts[x_name] == 1 and len(about) == 1  # the answer's name may occur twice
                (x,) = [o for o in objs if names[o["category_id"]] == x_name]
                axis, sign = RELATIONS[rel]
                hits = [o for o in objs if o is not x and sign * (_centre(o["bbox"])[axis] - _centre(x["bbox"])[axis]) > 0]
                assert [names[o["category_id"]] for o in hits] == [answer] == [names[about[0]["category_id"]]]
            elif qt == "how many":
                assert int(answer) == len(about) and ann["answer_type"] == "number"
                assert all(names[o["category_id"]] in q for o in about)
            elif qt == "is there a":
                assert (answer == "yes") == bool(about) and ann["answer_type"] == "yes/no"
            elif qt == "what color is the":
                assert len(about) == 1 and about[0]["color"] == answer and names[about[0]["category_id"]] in q
            else:
                areas = sorted((o["bbox"][2] * o["bbox"][3] for o in objs), reverse=True)
                assert about[0]["bbox"][2] * about[0]["bbox"][3] == areas[0] >= scenes.BIGGEST_RATIO * areas[1] * 0.99
                assert names[about[0]["category_id"]] == answer


def test_dominant_colour_of_known_pictures():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:5, :, :] = (215, 40, 45, 255)  # red, most of it
    rgba[5:7, :, :] = (55, 120, 215, 255)  # blue
    rgba[7, :, :] = (0, 0, 0, 255)  # outline: ignored
    assert dominant_colour(rgba) == "red"
    rgba[..., 3] = 0
    assert dominant_colour(rgba) == "black"  # nothing opaque and coloured


def test_script_writes_and_refuses_bad_input(packages, tmp_path, capsys):
    script = load_script("prepare_scenes")
    cache = packages["google"].parent
    assert script.main(["--out", str(tmp_path / "missing"), "--cache", str(tmp_path / "nowhere")]) == 2
    assert "no extracted emoji package" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "neg"), "--cache", str(cache), "--train", "-1"]) == 2
    # the real subset needs 40 seen concepts: the 40 fake ones (4 held out) are too few, a clear error
    assert script.main(["--out", str(tmp_path / "few"), "--cache", str(cache), "--train", "2"]) == 2
    assert "concepts fit" in capsys.readouterr().err
