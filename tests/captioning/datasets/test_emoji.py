"""captioning.datasets.emoji on tiny fake emoji-datasource packages: no npm, no network."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioning.core.errors import UserError
from captioning.datasets.emoji import (
    SPLITS,
    _split_concepts,
    build_emoji_dataset,
    fetch_package,
    normalize_name,
    prepare_emoji,
    qualifier_breakdown,
    skin_tone_caption,
)
from tests.conftest import load_script

VENDORS = ("google", "twitter", "apple")
N_PLAIN = 30  # plain base emoji 1F400 .. 1F41D, besides the special ones below


def _entry(unified, name, short_name=None, vendors=VENDORS, **extra):
    e = {"name": name, "unified": unified, "image": unified.lower() + ".png",
         "short_name": short_name or (name or "").lower().replace(" ", "_")}
    for v in ("google", "twitter", "apple", "facebook"):
        e[f"has_img_{v}"] = v in vendors
    e.update(extra)
    return e


def _variation(unified):
    return {"unified": unified, "image": unified.lower() + ".png",
            **{f"has_img_{v}": True for v in ("google", "twitter", "apple", "facebook")}}


def fixture_entries() -> list[dict]:
    tones = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
    entries = [_entry(f"1F{0x400 + i:03X}", f"THING {i}") for i in range(N_PLAIN)]
    entries += [
        _entry("1F6B6-200D-2640-FE0F", "WOMAN WALKING",
               skin_variations={t: _variation(f"1F6B6-{t}-200D-2640-FE0F") for t in tones}),
        _entry("1F9D1-200D-1F91D-200D-1F9D1", "PEOPLE HOLDING HANDS",
               skin_variations={f"{a}-{b}": _variation(f"1F9D1-{a}-200D-1F91D-200D-1F9D1-{b}")
                                for a in ("1F3FB", "1F3FF") for b in ("1F3FB", "1F3FF")}),
        _entry("1F468-200D-1F9B0", "MAN: RED HAIR", skin_variations={"1F3FD": _variation("1F468-1F3FD-200D-1F9B0")}),
        _entry("1F1E8-1F1FC", "Curaçao Flag"),
        _entry("1F1E6-1F1EC", "Antigua & Barbuda Flag"),
        _entry("1F1E8-1F1EE", "Côte d’Ivoire Flag"),
        _entry("1F9FF", None, short_name="nazar_amulet"),
        _entry("1F3C3", "RUNNER", obsoleted_by="1F3C3-200D-2642-FE0F"),
        _entry("1F3C3-200D-2642-FE0F", "MAN RUNNING", obsoletes="1F3C3"),
        _entry("2640-FE0F", "FEMALE SIGN", vendors=("google", "apple")),  # Twitter has no image
        _entry("2642-FE0F", "MALE SIGN"),  # flag set, but the Google file is missing (below)
    ]
    return entries


def _rgba(seed: int) -> Image.Image:
    """64 x 64, transparent corners, an opaque disc in the middle."""
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    color = (40 + seed * 37 % 200, 200 - seed * 53 % 150, 30 + seed * 11 % 200, 255)
    for y in range(16, 48):
        for x in range(16, 48):
            if (x - 32) ** 2 + (y - 32) ** 2 < 14 ** 2:
                im.putpixel((x, y), color)
    return im


def make_package(root: Path, vendor: str, entries: list[dict]) -> Path:
    """A folder laid out like an extracted emoji-datasource-<vendor> package."""
    pkg = root / f"emoji-datasource-{vendor}"
    img_dir = pkg / "img" / vendor / "64"
    img_dir.mkdir(parents=True)
    (pkg / "emoji.json").write_text(json.dumps(entries), encoding="utf-8")
    items = [i for e in entries for i in [e, *(e.get("skin_variations") or {}).values()]]
    for k, item in enumerate(items):
        if item[f"has_img_{vendor}"] and not (vendor == "google" and item["unified"] == "2642-FE0F"):
            _rgba(k).save(img_dir / item["image"])
    return pkg


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("emoji_packages")
    entries = fixture_entries()
    return {v: make_package(root, v, entries) for v in VENDORS}


@pytest.fixture(scope="module")
def built(packages, tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji_out")
    summaries = build_emoji_dataset(packages, out, seed=0)
    return out, summaries


def load(out: Path, split: str) -> tuple[COCO, dict[str, str]]:
    """(COCO index, file_name -> caption) of one split, through pycocotools."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / f"captions_{split}.json"))
    caption = {coco.imgs[a["image_id"]]["file_name"]: a["caption"] for a in coco.anns.values()}
    return coco, caption


def all_captions(out: Path) -> dict[str, str]:
    return {f: c for s in SPLITS for f, c in load(out, s)[1].items()}


def concepts(coco: COCO) -> set[str]:
    return {im["concept"] for im in coco.imgs.values()}


def test_coco_files_read_through_pycocotools(built):
    out, summaries = built
    assert [s.split for s in summaries] == list(SPLITS)
    for s in summaries:
        coco, _ = load(out, s.split)
        assert len(coco.imgs) == s.images == len(coco.anns) == s.captions > 0
        for im in coco.imgs.values():
            assert {"id", "file_name", "width", "height"} <= set(im)
            assert (out / "images" / im["file_name"]).is_file()
            assert im["file_name"] == f"{im['vendor']}_{im['unified']}.png"
            assert len(coco.imgToAnns[im["id"]]) == 1
        data = json.loads((out / f"captions_{s.split}.json").read_text())
        assert set(data) == {"info", "licenses", "images", "annotations"}
        assert all(set(a) == {"id", "image_id", "caption"} for a in data["annotations"])


def test_captions_names_tones_and_odd_characters(built):
    caps = all_captions(built[0])
    assert caps["google_1F400.png"] == "thing 0"
    assert caps["twitter_1F6B6-200D-2640-FE0F.png"] == "woman walking"
    assert caps["google_1F6B6-1F3FD-200D-2640-FE0F.png"] == "woman walking: medium skin tone"
    assert caps["google_1F6B6-1F3FC-200D-2640-FE0F.png"] == "woman walking: medium-light skin tone"
    assert caps["twitter_1F9D1-1F3FB-200D-1F91D-200D-1F9D1-1F3FF.png"] == "people holding hands: light skin tone, dark skin tone"
    assert caps["google_1F9D1-1F3FF-200D-1F91D-200D-1F9D1-1F3FF.png"] == "people holding hands: dark skin tone"
    assert caps["google_1F468-1F3FD-200D-1F9B0.png"] == "man: red hair, medium skin tone"
    assert caps["google_1F1E8-1F1FC.png"] == "curacao flag"
    assert caps["google_1F1E6-1F1EC.png"] == "antigua and barbuda flag"
    assert caps["google_1F1E8-1F1EE.png"] == "cote d'ivoire flag"
    assert caps["google_1F9FF.png"] == "nazar amulet"  # no name: short_name
    assert all(c == c.lower() and c.isascii() for c in caps.values())


def test_caption_helpers():
    assert normalize_name("  São Tomé & Príncipe  Flag ") == "sao tome and principe flag"
    assert skin_tone_caption("kiss: man, man", "1F3FB-1F3FC") == "kiss: man, man, light skin tone, medium-light skin tone"
    with pytest.raises(UserError):
        skin_tone_caption("x", "1F600")


def test_alpha_is_composited_over_white(built):
    out, _ = built
    for name in ("google_1F400.png", "apple_1F6B6-1F3FF-200D-2640-FE0F.png"):
        with Image.open(out / "images" / name) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
            assert im.getpixel((0, 0)) == (255, 255, 255)
            assert im.getpixel((32, 32)) != (255, 255, 255)


def test_only_flagged_existing_images(built):
    files = set(os.listdir(built[0] / "images"))
    assert "google_2640-FE0F.png" in files and "twitter_2640-FE0F.png" not in files  # flag false
    assert "twitter_2642-FE0F.png" in files and "google_2642-FE0F.png" not in files  # file missing


def test_splits_disjoint_by_concept_variants_follow_base(built, packages):
    out, _ = built
    coco = {s: load(out, s)[0] for s in SPLITS}
    train, val, style, held = (concepts(coco[s]) for s in SPLITS)
    assert held and not held & (train | val | style)
    assert val <= train  # val: seen concepts, drawn by the other vendor
    assert style == train  # Apple draws every fixture concept
    assert {im["vendor"] for im in coco["test_style"].imgs.values()} == {"apple"}
    for s in ("train", "val", "test_concept"):
        assert {im["vendor"] for im in coco[s].imgs.values()} <= {"google", "twitter"}
    # No image in two splits; every (concept, vendor) unit sits in exactly one split.
    files = [im["file_name"] for c in coco.values() for im in c.imgs.values()]
    assert len(files) == len(set(files))
    unit_split = {}
    for s, c in coco.items():
        for im in c.imgs.values():
            assert unit_split.setdefault((im["concept"], im["vendor"]), s) == s
    # Skin-tone variants carry their base as concept; obsoleted emoji join their successor.
    images = {im["unified"]: im for c in coco.values() for im in c.imgs.values() if im["vendor"] == "google"}
    assert images["1F6B6-1F3FF-200D-2640-FE0F"]["concept"] == "1F6B6-200D-2640-FE0F"
    assert images["1F3C3"]["concept"] == "1F3C3-200D-2642-FE0F"
    # The split is a seeded shuffle of sorted concepts: 10% held out.
    seen, held_out = _split_concepts(json.loads((packages["google"] / "emoji.json").read_text()), random.Random(0), 0.1)
    assert set(held_out) == held and len(held_out) == round(0.1 * (len(seen) + len(held_out)))


def test_second_run_is_identical_and_writes_nothing(built, packages):
    out, _ = built
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    build_emoji_dataset(packages, out, seed=0)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_deterministic_and_seeded(packages, built, tmp_path):
    build_emoji_dataset(packages, tmp_path / "same", seed=0)
    for s in SPLITS:
        assert (tmp_path / "same" / f"captions_{s}.json").read_bytes() == (built[0] / f"captions_{s}.json").read_bytes()
    build_emoji_dataset(packages, tmp_path / "other", seed=1)
    assert concepts(load(tmp_path / "other", "test_concept")[0]) != concepts(load(built[0], "test_concept")[0])


def test_without_apple_no_test_style(packages, built, tmp_path):
    out = tmp_path / "out"
    build_emoji_dataset(packages, out, seed=0)
    assert (out / "captions_test_style.json").exists()
    summaries = build_emoji_dataset({v: packages[v] for v in ("google", "twitter")}, out, seed=0)
    assert [s.split for s in summaries] == ["train", "val", "test_concept"]
    assert not (out / "captions_test_style.json").exists()  # the stale one is gone
    # The concept split does not depend on the vendors asked for.
    assert concepts(load(out, "test_concept")[0]) == concepts(load(built[0], "test_concept")[0])


def test_unknown_vendor_and_no_training_vendor(packages, tmp_path):
    with pytest.raises(UserError, match="unknown emoji vendor"):
        prepare_emoji(tmp_path, ["google", "noto"], cache_dir=tmp_path)
    with pytest.raises(UserError, match="training vendor"):
        build_emoji_dataset({"apple": packages["apple"]}, tmp_path)


# ---------------------------------------------------------------------------------------------
# Fetching: a missing npm, a failing npm, and a fake npm that "downloads" a local tarball.




def _fake_npm(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\nPATH=/usr/bin:/bin\n" + body + "\n")
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)


def test_npm_missing_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="npm not found"):
        fetch_package("google", tmp_path / "cache")


def test_npm_failure_is_a_user_error(tmp_path, monkeypatch):
    _fake_npm(tmp_path / "bin", 'echo "npm error 404 Not Found - GET https://registry.npmjs.org/x" >&2; exit 1')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(UserError, match="404 Not Found"):
        fetch_package("google", tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.tgz"))


def test_fetch_with_fake_npm_end_to_end(packages, built, tmp_path, monkeypatch, capsys):
    tarballs = tmp_path / "registry"
    tarballs.mkdir()
    for v, pkg in packages.items():
        with tarfile.open(tarballs / f"emoji-datasource-{v}-16.0.0.tgz", "w:gz") as tar:
            tar.add(pkg, arcname="package")
    # `npm pack emoji-datasource-google@16.0.0` -> ./emoji-datasource-google-16.0.0.tgz
    _fake_npm(tmp_path / "bin", f'cp "{tarballs}/$(echo "$2" | sed "s/@/-/").tgz" . && echo "$2" >> "{tmp_path}/calls"')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    main = load_script("prepare_emoji").main

    out = tmp_path / "emoji"
    assert main(["--out", str(out), "--vendors", "google,twitter,apple"]) == 0
    printed = capsys.readouterr().out
    assert "train:" in printed and "test_concept:" in printed
    for s in SPLITS:  # same files as converting the extracted packages directly
        assert (out / f"captions_{s}.json").read_bytes() == (built[0] / f"captions_{s}.json").read_bytes()
    assert (out / ".cache" / "emoji-datasource-apple-16.0.0" / "emoji.json").exists()
    # A second run fetches nothing.
    assert main(["--out", str(out), "--vendors", "google,twitter,apple"]) == 0
    assert len((tmp_path / "calls").read_text().split()) == 3
    # With npm gone, the cache still serves; with a fresh cache, one line on stderr and exit 2.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prepare_emoji: error: npm not found") and err.count("\n") == 1


def test_qualifier_breakdown_worked_example(tmp_path, capsys):
    names = {1: "grinning face", 2: "grinning face", 3: "thumbs up sign: light skin tone",
             4: "thumbs up sign: dark skin tone", 5: "kiss: man, man"}
    said = {1: "Grinning face", 2: "grinning face with smiling eyes", 3: "thumbs up sign: light skin tone",
            4: "thumbs up sign: medium skin tone", 5: "kiss: woman, man"}
    expected = {"base": {"images": 2, "exact": 0.5, "emoji": 0.5, "qualifier": 1.0},
                "skin tone": {"images": 2, "exact": 0.5, "emoji": 1.0, "qualifier": 0.5},
                "other": {"images": 1, "exact": 0.0, "emoji": 1.0, "qualifier": 0.0}}
    assert qualifier_breakdown({i: [c] for i, c in names.items()}, said) == expected
    # The script reads the real file formats (COCO captions, COCO results) and says the same.
    gt, res = tmp_path / "gt.json", tmp_path / "res.json"
    gt.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.png"} for i in names],
                              "annotations": [{"id": i, "image_id": i, "caption": c} for i, c in names.items()]}))
    res.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in said.items()]))
    main = load_script("emoji_breakdown").main
    assert main(["--captions", str(gt), "--results", str(res), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert main(["--captions", str(gt), "--results", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("no such results file")
