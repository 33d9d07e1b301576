"""Emoji captioning data: the ``emoji-datasource-<vendor>`` npm packages as a COCO captions set.

The same ~1,900 emoji concepts drawn by several vendors (iamcal/emoji-data, the data behind
emoji-mart and Slack) give a real dataset that installs from a registry, and a real test of
generalisation in two directions: to an unseen drawing style (Apple renderings of concepts
trained on Google and Twitter ones) and to unseen concepts (held-out emoji). Output is in the
COCO captions format (Chen et al. 2015, "Microsoft COCO Captions"), read through pycocotools
by :func:`captioning.data.load_coco_captions` like COCO itself::

    out/images/<vendor>_<unified>.png       64 x 64 RGB, alpha composited over white
    out/captions_{train,val,test_style,test_concept}.json

Captions: one per image, the emoji's ``name`` from ``emoji.json`` (``short_name`` with
underscores as spaces when a name is missing), lowercased and folded to ASCII: accents are
dropped (``"curaçao flag"`` -> ``"curacao flag"``), the curly apostrophe becomes ``'`` and
``&`` becomes ``and``; other punctuation (``: , . ( ) * -``) is kept, the tokenizer splits it.
A skin-tone variant appends its tone(s) after a colon, or after a comma when the name already
has one, collapsing two equal tones as Unicode's CLDR names do: ``"woman walking: medium skin
tone"``, ``"people holding hands: light skin tone, dark skin tone"``, ``"kiss: man, man,
medium skin tone"``. The names are the package's (often the old Unicode character names such
as ``"runner"``), not CLDR's.

Splits (seeded, hash-free: concepts sorted by unified code, shuffled with
``random.Random(seed)``). A *concept* is a base emoji with its skin-tone variants; an emoji
that ``emoji.json`` marks ``obsoleted_by`` another (``runner`` -> ``man running``) joins that
one's concept, so near-identical drawings never straddle splits.

* ``test_concept``: training-vendor (Google, Twitter) renderings of 10% of the concepts.
* the other 90% are the *seen* concepts. ``val`` takes, for 10% of the seen concepts that both
  training vendors draw, ONE vendor's renderings (picked by the same generator); ``train``
  takes everything else of the seen concepts. So every val concept is also a train concept,
  drawn by the other vendor: val measures seen concepts on unseen images (about 5% of the
  seen-style images), the right signal for early stopping. With a single training vendor val
  falls back to whole concepts (which are then unseen).
* ``test_style``: renderings by the other requested vendors (Apple, Facebook) of the concepts
  that train has.

Concepts are split over all of ``emoji.json`` before vendor availability is looked at, so the
concept split does not depend on ``--vendors``; image ids do not either (``vendor * 100000 +
rank of the unified code``). Only images whose ``has_img_<vendor>`` flag is true and whose file
exists are used. Apple's and Facebook's images are not freely licensed: they belong under
``data/`` (ignored by git), never in anything tracked.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from PIL import Image

from captioning.core.errors import UserError
from captioning.core.fileio import atomic_path, write_if_changed
from captioning.core.images import to_rgb

VERSION = "16.0.0"
IMAGE_SIZE = 64
TRAIN_VENDORS = ("google", "twitter")
# Fixed vendor numbers: image ids stay the same whichever vendors a run asks for.
VENDOR_IDS = {"google": 1, "twitter": 2, "apple": 3, "facebook": 4}
LICENSES = {
    "google": ("Apache-2.0 (Noto Emoji)", "https://github.com/googlefonts/noto-emoji/blob/main/LICENSE"),
    "twitter": ("CC-BY-4.0 (Twemoji)", "https://creativecommons.org/licenses/by/4.0/"),
    "apple": ("Apple emoji: not freely licensed, do not redistribute", "https://github.com/iamcal/emoji-data#image-sources"),
    "facebook": ("Facebook emoji: not freely licensed, do not redistribute", "https://github.com/iamcal/emoji-data#image-sources"),
}
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}
SPLITS = ("train", "val", "test_style", "test_concept")
TEST_CONCEPT_FRACTION = 0.10
VAL_FRACTION = 0.10  # of the seen concepts, one vendor's rendering each


# ---------------------------------------------------------------------------------------------
# Fetching the npm packages


def package_name(vendor: str) -> str:
    return f"emoji-datasource-{vendor}"


def check_vendors(vendors: Iterable[str]) -> list[str]:
    """Validated, de-duplicated vendor list in canonical order (google, twitter, apple, facebook)."""
    vendors = [v.strip().lower() for v in vendors if v.strip()]
    unknown = sorted(set(vendors) - set(VENDOR_IDS))
    if unknown:
        raise UserError(f"unknown emoji vendor(s) {', '.join(unknown)} (choose from {', '.join(VENDOR_IDS)})")
    if not set(vendors) & set(TRAIN_VENDORS):
        raise UserError(f"need at least one training vendor ({' or '.join(TRAIN_VENDORS)}) among --vendors")
    return [v for v in VENDOR_IDS if v in vendors]


def fetch_package(vendor: str, cache_dir: str | os.PathLike, version: str = VERSION) -> Path:
    """``npm pack`` the vendor's package into ``cache_dir`` (once) and extract what we use
    (``emoji.json`` and ``img/<vendor>/64/*.png``, about 4 MB of the 75 MB) into a package folder
    laid out like the npm package. Returns that folder. Both steps are skipped when done."""
    cache_dir = Path(cache_dir)
    dest = cache_dir / f"{package_name(vendor)}-{version}"
    if (dest / ".complete").exists():
        return dest
    tarball = _npm_pack(f"{package_name(vendor)}@{version}", cache_dir, f"{package_name(vendor)}-{version}.tgz")
    _extract(tarball, vendor, dest)
    return dest


def _npm_pack(spec: str, cache_dir: Path, filename: str) -> Path:
    tarball = cache_dir / filename
    if tarball.exists():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(f"npm not found on PATH: it is needed to fetch {spec} (install Node.js, or pass --cache with {filename} in it)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Pack into a scratch folder and move the finished tarball: an interrupted download never
    # leaves a truncated .tgz that a later run would trust.
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=cache_dir) as tmp:
        try:
            proc = subprocess.run([npm, "pack", spec], cwd=tmp, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise UserError(f"npm pack {spec} failed: {e}") from None
        produced = Path(tmp) / filename
        if proc.returncode != 0 or not produced.exists():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            detail = lines[-1].strip() if lines else f"exit code {proc.returncode}, no {filename}"
            raise UserError(f"npm pack {spec} failed: {detail}")
        os.replace(produced, tarball)
    return tarball


def _extract(tarball: Path, vendor: str, dest: Path) -> None:
    wanted = re.compile(rf"^package/(emoji\.json|img/{re.escape(vendor)}/64/[0-9a-f-]+\.png)$")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                for member in tar:
                    m = wanted.match(member.name)
                    if not (m and member.isfile()):
                        continue
                    # Written by hand from a name the regex vetted: no path from the archive is trusted.
                    target = tmp / m.group(1)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError(f"{tarball}: not a readable npm package ({e}); delete it and run again") from None
        if not (tmp / "emoji.json").exists():
            raise UserError(f"{tarball}: has no package/emoji.json; delete it and run again")
        (tmp / ".complete").write_text("")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Concepts and captions


@dataclass(frozen=True)
class EmojiImage:
    """One rendering to be: an emoji (base or skin-tone variant) by one vendor."""

    vendor: str
    unified: str  # e.g. "1F6B6-1F3FD-200D-2640-FE0F"
    concept: str  # unified code of the concept's base emoji; the unit of the split
    caption: str
    source: Path  # the vendor's RGBA 64 px PNG

    @property
    def file_name(self) -> str:
        return f"{self.vendor}_{self.unified}.png"


def normalize_name(name: str) -> str:
    """Lowercase ASCII caption text of an emoji name; see the module docstring."""
    name = name.replace("\u2019", "'").replace("&", " and ")
    name = unicodedata.normalize("NFKD", name)
    name = "".join(c for c in name if not unicodedata.combining(c))
    name = name.encode("ascii", "ignore").decode("ascii")
    return " ".join(name.lower().split())


def base_caption(entry: Mapping) -> str:
    name = entry.get("name") or (entry.get("short_name") or "").replace("_", " ")
    caption = normalize_name(name)
    if not caption:
        raise UserError(f"emoji {entry.get('unified')}: has neither a name nor a short_name")
    return caption


def skin_tone_caption(base: str, key: str) -> str:
    """``key`` is a ``skin_variations`` key of emoji.json: one modifier (``"1F3FD"``) or one per
    person (``"1F3FB-1F3FF"``); equal tones are named once."""
    tones = []
    for code in key.upper().split("-"):
        if code not in SKIN_TONES:
            raise UserError(f"unknown skin-tone modifier {code!r} in skin_variations key {key!r}")
        if SKIN_TONES[code] not in tones:
            tones.append(SKIN_TONES[code])
    return f"{base}{', ' if ':' in base else ': '}{', '.join(tones)}"


def load_emoji_json(package_dir: str | os.PathLike) -> list[dict]:
    path = Path(package_dir) / "emoji.json"
    if not path.exists():
        raise UserError(f"{path}: no such file (is {package_dir} an extracted emoji-datasource package?)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "unified" in e for e in entries):
        raise UserError(f"{path}: not an emoji-datasource emoji.json (a list of objects with 'unified')")
    return entries


def concept_of(entries: list[dict]) -> dict[str, str]:
    """Base unified code -> unified code of its concept: itself, or (following ``obsoleted_by``
    to the end of the chain) the emoji that replaced it."""
    successor = {e["unified"]: e.get("obsoleted_by") for e in entries}
    out = {}
    for code in successor:
        concept, visited = code, {code}
        while successor.get(concept) in successor and successor[concept] not in visited:
            concept = successor[concept]
            visited.add(concept)
        out[code] = concept
    return out


def list_images(entries: list[dict], vendor: str, package_dir: str | os.PathLike) -> list[EmojiImage]:
    """Every rendering ``vendor`` has of ``entries`` (flag set and file present), bases and variants."""
    img_dir = Path(package_dir) / "img" / vendor / "64"
    present = {p.name for p in img_dir.glob("*.png")} if img_dir.is_dir() else set()
    concepts = concept_of(entries)
    flag = f"has_img_{vendor}"
    images = []
    for e in entries:
        base = base_caption(e)
        concept = concepts[e["unified"]]
        variants = [(e, base)] + [(v, skin_tone_caption(base, k)) for k, v in sorted((e.get("skin_variations") or {}).items())]
        for item, caption in variants:
            name = item.get("image") or item["unified"].lower() + ".png"
            if item.get(flag) and name in present:
                images.append(EmojiImage(vendor, item["unified"], concept, caption, img_dir / name))
    return images


# ---------------------------------------------------------------------------------------------
# Splits


def _split_concepts(entries: list[dict], rng: random.Random, test_fraction: float) -> tuple[list[str], list[str]]:
    """(seen, held-out) concept codes, in shuffled order: sort, shuffle with ``rng``, the
    first ``test_fraction`` are held out."""
    concepts = sorted(set(concept_of(entries).values()))
    rng.shuffle(concepts)
    n_test = round(test_fraction * len(concepts))
    return concepts[n_test:], concepts[:n_test]


def assign_splits(images: list[EmojiImage], entries: list[dict], seed: int = 0,
                  test_fraction: float = TEST_CONCEPT_FRACTION, val_fraction: float = VAL_FRACTION) -> dict[str, list[EmojiImage]]:
    """Images by split (see the module docstring). One ``Random(seed)`` shuffles the concepts,
    then picks which vendor's rendering of each val concept is held out."""
    rng = random.Random(seed)
    seen, held_out = _split_concepts(entries, rng, test_fraction)
    held_out = set(held_out)
    train_vendors = sorted({im.vendor for im in images} & set(TRAIN_VENDORS))

    drawn_by: dict[str, set[str]] = {}
    for im in images:
        if im.vendor in train_vendors:
            drawn_by.setdefault(im.concept, set()).add(im.vendor)
    n_val = round(val_fraction * len(seen))
    val_units: set[tuple[str, str]] = set()  # (concept, vendor); vendor "*" = every vendor
    for concept in seen:
        if len(val_units) >= n_val:
            break
        vendors = sorted(drawn_by.get(concept, ()))
        if len(train_vendors) >= 2 and len(vendors) >= 2:
            val_units.add((concept, rng.choice(vendors)))
        elif len(train_vendors) == 1 and vendors:
            val_units.add((concept, "*"))

    splits: dict[str, list[EmojiImage]] = {s: [] for s in SPLITS}
    for im in images:
        if im.vendor not in train_vendors:
            continue
        if im.concept in held_out:
            splits["test_concept"].append(im)
        elif (im.concept, im.vendor) in val_units or (im.concept, "*") in val_units:
            splits["val"].append(im)
        else:
            splits["train"].append(im)
    train_concepts = {im.concept for im in splits["train"]}
    splits["test_style"] = [im for im in images if im.vendor not in train_vendors and im.concept in train_concepts]
    return splits


# ---------------------------------------------------------------------------------------------
# Writing


def image_ids(entries: list[dict]) -> dict[tuple[str, str], int]:
    """(vendor, unified) -> COCO image id, independent of which vendors and images are used."""
    codes = sorted({e["unified"] for e in entries} | {v["unified"] for e in entries for v in (e.get("skin_variations") or {}).values()})
    return {(vendor, code): vid * 100_000 + rank + 1 for vendor, vid in VENDOR_IDS.items() for rank, code in enumerate(codes)}


def write_image(im: EmojiImage, image_dir: Path) -> bool:
    """Composite the RGBA rendering over white as RGB PNG; False when it already exists."""
    target = image_dir / im.file_name
    if target.exists():
        return False
    try:
        with Image.open(im.source) as src:
            src.load()
            rgb = to_rgb(src)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{im.source}: not a readable PNG ({e})") from None
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    with atomic_path(target) as tmp:
        rgb.save(tmp, format="PNG")
    return True


def coco_captions(split: str, images: list[EmojiImage], ids: Mapping[tuple[str, str], int], version: str = VERSION) -> dict:
    vendors = [v for v in VENDOR_IDS if any(im.vendor == v for im in images)]
    coco_images, annotations = [], []
    for im in sorted(images, key=lambda im: ids[(im.vendor, im.unified)]):
        image_id = ids[(im.vendor, im.unified)]
        coco_images.append({"id": image_id, "file_name": im.file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                            "license": VENDOR_IDS[im.vendor], "vendor": im.vendor, "unified": im.unified, "concept": im.concept})
        annotations.append({"id": image_id, "image_id": image_id, "caption": im.caption})
    return {
        "info": {"description": f"Emoji captions, split {split}: emoji-datasource {version} ({', '.join(vendors) or 'no vendor'})",
                 "version": version, "year": 2024, "contributor": "iamcal/emoji-data; vendors as licensed",
                 "url": "https://github.com/iamcal/emoji-data", "date_created": ""},
        "licenses": [{"id": VENDOR_IDS[v], "name": LICENSES[v][0], "url": LICENSES[v][1]} for v in VENDOR_IDS],
        "images": coco_images,
        "annotations": annotations,
    }


@dataclass
class SplitSummary:
    split: str
    images: int
    captions: int
    concepts: int

    def __str__(self) -> str:
        return f"{self.split}: {self.images:,} images, {self.captions:,} captions, {self.concepts:,} concepts"


def build_emoji_dataset(package_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike, seed: int = 0,
                        test_fraction: float = TEST_CONCEPT_FRACTION, val_fraction: float = VAL_FRACTION,
                        version: str = VERSION) -> list[SplitSummary]:
    """Write ``out_dir/images`` and ``out_dir/captions_<split>.json`` from extracted packages
    (``{vendor: folder with emoji.json and img/<vendor>/64/}``). Existing images are kept and
    unchanged caption files are not rewritten, so a second run is a no-op."""
    vendors = check_vendors(package_dirs)
    out_dir = Path(out_dir)
    # Names and the concept split come from one emoji.json (all vendors ship the same file);
    # each vendor's own flags and files decide which of its renderings exist.
    entries = load_emoji_json(package_dirs[vendors[0]])
    images = [im for v in vendors for im in list_images(entries, v, package_dirs[v])]
    splits = assign_splits(images, entries, seed, test_fraction, val_fraction)
    has_style = any(v not in TRAIN_VENDORS for v in vendors)

    ids = image_ids(entries)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    summaries = []
    for split in SPLITS:
        path = out_dir / f"captions_{split}.json"
        if split == "test_style" and not has_style:
            path.unlink(missing_ok=True)  # a stale file from a run with --vendors ...,apple would mislead
            continue
        for im in splits[split]:
            write_image(im, image_dir)
        data = coco_captions(split, splits[split], ids, version)
        write_if_changed(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        summaries.append(SplitSummary(split, len(data["images"]), len(data["annotations"]), len({im.concept for im in splits[split]})))
    return summaries


def prepare_emoji(out_dir: str | os.PathLike, vendors: Iterable[str] = ("google", "twitter", "apple"), seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, version: str = VERSION) -> list[SplitSummary]:
    """Fetch (``npm pack``, cached) and convert: the whole pipeline behind ``scripts/prepare_emoji.py``.
    The cache defaults to ``out_dir/.cache``."""
    vendors = check_vendors(vendors)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(out_dir) / ".cache"
    package_dirs = {v: fetch_package(v, cache_dir, version) for v in vendors}
    return build_emoji_dataset(package_dirs, out_dir, seed, version=version)


# ---------------------------------------------------------------------------------------------
# Scoring by part of the name


def split_qualifier(caption: str) -> tuple[str, str]:
    """``"woman walking: medium skin tone"`` -> ``("woman walking", "medium skin tone")``;
    a name without ``:`` -> ``(name, "")``."""
    emoji, _, qualifier = caption.partition(":")
    return " ".join(emoji.split()), " ".join(qualifier.split())


def qualifier_breakdown(references: Mapping[int, list[str]], candidates: Mapping[int, str]) -> dict[str, dict]:
    """Exact match split by what the reference name qualifies: ``base`` (no ``:``),
    ``skin tone`` (the part after ``:`` names a tone) and ``other`` (``kiss: man, man``...).
    For each group: ``images``, ``exact`` (whole name right), ``emoji`` (the part before ``:``
    right) and ``qualifier`` (the part after it right, "" = "" for base emoji). Emoji captions
    have one reference per image; the first one is used."""
    groups: dict[str, dict] = {}
    for image_id, caption in candidates.items():
        ref = references[image_id][0].strip().lower()
        (emoji, qualifier), (p_emoji, p_qualifier) = split_qualifier(ref), split_qualifier(caption.strip().lower())
        kind = "base" if not qualifier else "skin tone" if "skin tone" in qualifier else "other"
        g = groups.setdefault(kind, {"images": 0, "exact": 0, "emoji": 0, "qualifier": 0})
        g["images"] += 1
        g["exact"] += (emoji, qualifier) == (p_emoji, p_qualifier)
        g["emoji"] += emoji == p_emoji
        g["qualifier"] += qualifier == p_qualifier
    for g in groups.values():
        for k in ("exact", "emoji", "qualifier"):
            g[k] /= g["images"]
    return groups
