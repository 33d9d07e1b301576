"""The freely licensed emoji styles of captioning.datasets.emoji (Fluent 3D/flat/colour, EmojiOne 2,
Noto v1, OpenMoji) on tiny fake packages laid out like the npm ones: no npm, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("resvg_py")

from captioning.datasets.emoji import (
    SPLITS,
    build_emoji_dataset,
    codepoint_key,
    iconify_svg,
    render_svg,
    select_vendors,
    style_images,
)
from tests.captioning.datasets.test_emoji import (
    VENDORS,
    fixture_entries,
    load,
    make_package,
)

RED, BLUE = (220, 30, 30), (30, 30, 220)
TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")
TONE_COLOURS = {"1f3fb": (250, 220, 190), "1f3fc": (230, 190, 150), "1f3fd": (190, 140, 100),
                "1f3fe": (140, 90, 60), "1f3ff": (80, 50, 30)}


def entries() -> list[dict]:
    """The emoji-datasource fixture, with categories (fluent3d skips "Flags")."""
    out = fixture_entries()
    for e in out:
        e["category"] = "Flags" if e["name"] and e["name"].endswith("Flag") else "Smileys & Emotion"
    return out


def _all_items(es):
    return [i for e in es for i in [e, *(e.get("skin_variations") or {}).values()]]


def _half_svg(width=32, height=32) -> str:
    """An Iconify body: the left half red, the right half blue (a flip swaps them)."""
    return (f'<rect x="0" y="0" width="{width / 2:g}" height="{height}" fill="rgb{RED}"/>'
            f'<rect x="{width / 2:g}" y="0" width="{width / 2:g}" height="{height}" fill="rgb{BLUE}"/>')


def _tone_of(unified: str) -> str | None:
    return next((c for c in codepoint_key(unified).split("-") if c in TONE_COLOURS), None)


def _colour(unified: str) -> tuple[int, int, int]:
    tone = _tone_of(unified)
    return TONE_COLOURS[tone] if tone else (40 + int(codepoint_key(unified)[-2:], 16) % 200, 120, 60)


def make_fluent3d(root: Path, es) -> Path:
    """Files named by codepoint with FE0F kept, 256 px WebP; the 1f3fc/1f3fd files swapped as
    in the real package; flags present (placeholders)."""
    pkg = root / "fluent3d"
    (pkg / "assets").mkdir(parents=True)
    swap = {"1f3fc": "1f3fd", "1f3fd": "1f3fc"}
    for item in _all_items(es):
        code = item["unified"].lower()
        name = "-".join(swap.get(c, c) for c in code.split("-"))  # the package's mistake
        Image.new("RGBA", (256, 256), _colour(code) + (255,)).save(pkg / "assets" / f"{name}.webp", lossless=True)
    return pkg


def make_iconify(root: Path, name: str, es, own_chars: bool = True) -> Path:
    """An Iconify set: one icon per fixture emoji named n<code>, chars.json (without FE0F);
    plus a pair "left"/"right" where right is an hFlip alias, and a 32 x 24 icon."""
    pkg = root / name
    pkg.mkdir(parents=True)
    icons, chars = {}, {}
    for item in _all_items(es):
        key = codepoint_key(item["unified"])
        icons[f"n{key}"] = {"body": f'<circle cx="16" cy="16" r="14" fill="rgb{_colour(key)}"/>'}
        chars[key] = f"n{key}"
    icons["left"] = {"body": _half_svg()}
    icons["wide"] = {"body": _half_svg(32, 24).replace('fill="rgb(30, 30, 220)"', 'fill="rgb(220, 30, 30)"'), "height": 24}
    chars["1f400"], chars["1f401"], chars["1f402"] = "left", "right", "wide"
    data = {"prefix": name, "width": 32, "height": 32, "icons": icons, "aliases": {"right": {"parent": "left", "hFlip": True}}}
    (pkg / "icons.json").write_text(json.dumps(data))
    if own_chars:
        (pkg / "chars.json").write_text(json.dumps(chars))
    else:  # name-only set: the name table comes from another set (fetch_style copies it to names/0.json)
        (pkg / "names").mkdir()
        (pkg / "names" / "0.json").write_text(json.dumps({"1f400-fe0f": "left", **chars}))
    return pkg


def make_openmoji(root: Path, es) -> Path:
    pkg = root / "openmoji"
    (pkg / "color" / "svg").mkdir(parents=True)
    for item in _all_items(es)[:12]:  # OpenMoji draws only some of them here
        (pkg / "color" / "svg" / f"{item['unified'].upper()}.svg").write_text(
            f'<svg viewBox="0 0 72 72" xmlns="http://www.w3.org/2000/svg"><rect width="72" height="72" fill="rgb{_colour(item["unified"])}"/></svg>')
    return pkg


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    root = tmp_path_factory.mktemp("styles")
    es = entries()
    dirs = {v: make_package(root, v, es) for v in VENDORS}
    dirs["fluent3d"] = make_fluent3d(root, es)
    dirs["fluentflat"] = make_iconify(root, "fluentflat", es)
    dirs["emojione"] = make_iconify(root, "emojione", es, own_chars=False)
    dirs["openmoji"] = make_openmoji(root, es)
    out = root / "out"
    build_emoji_dataset(dirs, out, seed=0)
    return es, dirs, out


def _by_unified(split_images, vendor):
    return {im.unified: im for im in split_images if im.vendor == vendor}


def test_codepoint_key_drops_fe0f():
    assert codepoint_key("1F3F3-FE0F-200D-1F308") == "1f3f3-200d-1f308" == codepoint_key("1f3f3-200d-1f308")


def test_fluent3d_tone_swap_fixed_and_flags_skipped(styled):
    es, dirs, _ = styled
    images = _by_unified(style_images(es, "fluent3d", dirs["fluent3d"]), "fluent3d")
    for tone in TONES:
        unified = f"1F6B6-{tone}-200D-2640-FE0F"
        with Image.open(images[unified].source) as im:
            assert im.convert("RGB").getpixel((128, 128)) == TONE_COLOURS[tone.lower()], tone
    flags = [e["unified"] for e in es if e["category"] == "Flags"]
    assert flags and not set(flags) & set(images)
    assert "1F400" in images


def test_iconify_names_flip_and_square(styled):
    es, dirs, _ = styled
    for vendor in ("fluentflat", "emojione"):
        images = _by_unified(style_images(es, vendor, dirs[vendor]), vendor)
        with Image.open(images["1F400"].source) as left, Image.open(images["1F401"].source) as right:
            assert left.size == right.size == (64, 64)
            assert left.getpixel((8, 32))[:3] == RED and left.getpixel((56, 32))[:3] == BLUE
            assert right.getpixel((8, 32))[:3] == BLUE and right.getpixel((56, 32))[:3] == RED  # hFlip
        with Image.open(images["1F402"].source) as wide:  # 32 x 24, padded top and bottom
            assert wide.getpixel((32, 2))[3] == 0 and wide.getpixel((32, 32))[:3] == RED
        # Names map the tone variants too, each to its own drawing.
        with Image.open(images["1F6B6-1F3FD-200D-2640-FE0F"].source) as im:
            assert im.getpixel((32, 32))[:3] == TONE_COLOURS["1f3fd"]


def test_iconify_svg_unknown_and_render():
    data = {"width": 32, "height": 32, "icons": {"a": {"body": _half_svg()}}, "aliases": {"b": {"parent": "a", "hFlip": True}}}
    assert iconify_svg(data, "missing") is None
    im = render_svg(iconify_svg(data, "b"), 16)
    assert im.size == (16, 16) and im.getpixel((2, 8))[:3] == BLUE


def test_splits_with_styles(styled):
    _, _, out = styled
    coco = {s: load(out, s)[0] for s in SPLITS}
    vendors = {s: {im["vendor"] for im in c.imgs.values()} for s, c in coco.items()}
    assert vendors["train"] == {"google", "twitter", "fluent3d", "fluentflat", "emojione", "openmoji"}
    assert vendors["test_style"] == {"apple"} and "apple" not in vendors["val"] | vendors["test_concept"]
    held = {im["concept"] for im in coco["test_concept"].imgs.values()}
    assert held and not held & {im["concept"] for s in ("train", "val", "test_style") for im in coco[s].imgs.values()}
    for vendor in vendors["train"]:  # no held-out concept in train, whatever the style
        assert not held & {im["concept"] for im in coco["train"].imgs.values() if im["vendor"] == vendor}
    # Each val concept keeps renderings in train, and val has a new style's drawing of some.
    train_concepts = {im["concept"] for im in coco["train"].imgs.values()}
    assert {im["concept"] for im in coco["val"].imgs.values()} <= train_concepts
    assert vendors["val"] - {"google", "twitter"}


def test_google_twitter_splits_unchanged_by_styles(styled, tmp_path):
    _, dirs, out = styled
    plain = tmp_path / "plain"
    build_emoji_dataset({v: dirs[v] for v in VENDORS}, plain, seed=0)
    for split in SPLITS:
        old = {(im["vendor"], im["unified"]) for im in load(plain, split)[0].imgs.values()}
        new = {(im["vendor"], im["unified"]) for im in load(out, split)[0].imgs.values() if im["vendor"] in VENDORS}
        assert old == new, split


def test_licenses_recorded(styled):
    _, _, out = styled
    record = json.loads((out / "licenses.json").read_text())
    assert set(record) == {"google", "twitter", "apple", "fluent3d", "fluentflat", "emojione", "openmoji"}
    assert record["emojione"]["license"].startswith("CC-BY-4.0") and "EmojiOne" in record["emojione"]["credit"]
    assert record["openmoji"]["license"].startswith("CC-BY-SA-4.0")
    assert record["fluent3d"]["package"] == "@lobehub/fluent-emoji-3d@1.1.0" and record["fluent3d"]["images"]["train"] > 0
    assert record["apple"]["trainable"] is False and record["twitter"]["trainable"] is True
    licenses = {x["id"]: x["name"] for x in json.loads((out / "captions_train.json").read_text())["licenses"]}
    assert licenses[8].startswith("CC-BY-4.0")


def test_select_vendors(styled):
    _, _, out = styled
    data = json.loads((out / "captions_train.json").read_text())
    sub = select_vendors(data, ["openmoji", "fluent3d"])
    assert {im["vendor"] for im in sub["images"]} == {"openmoji", "fluent3d"}
    assert {a["image_id"] for a in sub["annotations"]} == {im["id"] for im in sub["images"]}


def test_second_build_renders_nothing(styled):
    _, dirs, out = styled
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    renders = {p: p.stat().st_mtime_ns for p in dirs["fluentflat"].rglob("*.png")}
    build_emoji_dataset(dirs, out, seed=0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert {p: p.stat().st_mtime_ns for p in dirs["fluentflat"].rglob("*.png")} == renders
