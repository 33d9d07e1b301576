"""Emoji captioning data: emoji npm packages (``emoji-datasource-<vendor>`` and other freely
licensed styles) as a COCO captions set.

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

Other freely licensed styles (:data:`STYLES`: Fluent 3D, flat and colour, EmojiOne 2, Noto v1,
OpenMoji; licences in :data:`LICENSES`, credits in :data:`CREDITS`, both written to
``out/licenses.json``) are training vendors like Google and Twitter: matched to ``emoji.json``
by codepoint with ``FE0F`` dropped, SVGs rendered once by resvg. Their held-out concepts go to
``test_concept``; ``val`` keeps the Google/Twitter units above unchanged and adds, for each
such val concept, one other style's drawing (picked by ``Random(seed + 1)``).

Concepts are split over all of ``emoji.json`` before vendor availability is looked at, so the
concept split does not depend on ``--vendors``; image ids do not either (``vendor * 100000 +
rank of the unified code``). Only images whose ``has_img_<vendor>`` flag is true and whose file
exists are used. Apple's and Facebook's images are not freely licensed: they belong under
``data/`` (ignored by git), never in anything tracked.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from captioning.core.errors import UserError
from captioning.core.fileio import atomic_path, write_if_changed
from captioning.core.images import to_rgb

VERSION = "16.0.0"
IMAGE_SIZE = 64
# emoji-datasource vendors: PNGs and emoji.json (the names and the concept split) in one package.
DATASOURCE_VENDORS = ("google", "twitter", "apple", "facebook")
# Every freely licensed style may train; Apple's and Facebook's artwork only makes test_style.
TRAIN_VENDORS = ("google", "twitter", "fluent3d", "fluentflat", "fluent", "emojione", "notov1", "openmoji")
# Fixed vendor numbers: image ids stay the same whichever vendors a run asks for.
VENDOR_IDS = {"google": 1, "twitter": 2, "apple": 3, "facebook": 4, "fluent3d": 5, "fluentflat": 6, "fluent": 7,
              "emojione": 8, "notov1": 9, "openmoji": 10}
LICENSES = {
    "google": ("Apache-2.0 (Noto Emoji)", "https://github.com/googlefonts/noto-emoji/blob/main/LICENSE"),
    "twitter": ("CC-BY-4.0 (Twemoji)", "https://creativecommons.org/licenses/by/4.0/"),
    "apple": ("Apple emoji: not freely licensed, do not redistribute", "https://github.com/iamcal/emoji-data#image-sources"),
    "facebook": ("Facebook emoji: not freely licensed, do not redistribute", "https://github.com/iamcal/emoji-data#image-sources"),
    "fluent3d": ("MIT (Microsoft Fluent Emoji, 3D)", "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE"),
    "fluentflat": ("MIT (Microsoft Fluent Emoji, flat)", "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE"),
    "fluent": ("MIT (Microsoft Fluent Emoji, colour)", "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE"),
    "emojione": ("CC-BY-4.0 (EmojiOne 2)", "https://creativecommons.org/licenses/by/4.0/"),
    "notov1": ("Apache-2.0 (Noto Emoji v1, 'blob')", "https://github.com/googlefonts/noto-emoji/blob/main/svg/LICENSE"),
    "openmoji": ("CC-BY-SA-4.0 (OpenMoji)", "https://creativecommons.org/licenses/by-sa/4.0/"),
}
# The attribution each licence asks for (CC-BY and CC-BY-SA require one; given for all).
CREDITS = {
    "google": "Noto Emoji by Google (github.com/googlefonts/noto-emoji), Apache-2.0, via emoji-datasource-google",
    "twitter": "Twemoji by Twitter, Inc. and other contributors (github.com/twitter/twemoji), CC-BY-4.0, via emoji-datasource-twitter",
    "apple": "Apple Color Emoji, (c) Apple Inc.: not freely licensed, test only, never redistributed",
    "facebook": "Facebook emoji, (c) Meta Platforms: not freely licensed, test only, never redistributed",
    "fluent3d": "Fluent Emoji (3D) by Microsoft (github.com/microsoft/fluentui-emoji), MIT, via @lobehub/fluent-emoji-3d",
    "fluentflat": "Fluent Emoji (flat) by Microsoft (github.com/microsoft/fluentui-emoji), MIT, via Iconify",
    "fluent": "Fluent Emoji (colour) by Microsoft (github.com/microsoft/fluentui-emoji), MIT, via Iconify",
    "emojione": "Emoji artwork provided by EmojiOne 2 (Ranks.com, now JoyPixels; github.com/joypixels/emojione-legacy), CC-BY-4.0, via Iconify",
    "notov1": "Noto Emoji v1 by Google (github.com/googlefonts/noto-emoji), Apache-2.0, via Iconify",
    "openmoji": "OpenMoji, the open-source emoji and icon project (openmoji.org), CC-BY-SA-4.0",
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
    """Validated, de-duplicated vendor list in canonical (``VENDOR_IDS``) order."""
    vendors = [v.strip().lower() for v in vendors if v.strip()]
    unknown = sorted(set(vendors) - set(VENDOR_IDS))
    if unknown:
        raise UserError(f"unknown emoji vendor(s) {', '.join(unknown)} (choose from {', '.join(VENDOR_IDS)})")
    if not set(vendors) & set(TRAIN_VENDORS):
        raise UserError(f"need at least one training vendor ({', '.join(TRAIN_VENDORS)}) among --vendors")
    return [v for v in VENDOR_IDS if v in vendors]


def fetch_package(vendor: str, cache_dir: str | os.PathLike, version: str = VERSION) -> Path:
    """``npm pack`` the vendor's package into ``cache_dir`` (once) and extract what we use
    (``emoji.json`` and ``img/<vendor>/64/*.png``, about 4 MB of the 75 MB) into a package folder
    laid out like the npm package. Returns that folder. Both steps are skipped when done.
    The other styles (``fluent3d`` ...) come from :func:`fetch_style`."""
    if vendor in STYLES:
        return fetch_style(vendor, cache_dir)
    cache_dir = Path(cache_dir)
    dest = cache_dir / f"{package_name(vendor)}-{version}"
    if (dest / ".complete").exists():
        return dest
    tarball = _npm_pack(f"{package_name(vendor)}@{version}", cache_dir, f"{package_name(vendor)}-{version}.tgz")
    _extract(tarball, dest, rf"^package/(emoji\.json|img/{re.escape(vendor)}/64/[0-9a-f-]+\.png)$", "emoji.json")
    return dest


def fetch_names(cache_dir: str | os.PathLike, version: str = VERSION) -> Path:
    """The ``emoji-datasource`` package without images (its ``emoji.json``: names, skin tones,
    the concepts): the name table when no emoji-datasource vendor is asked for."""
    cache_dir = Path(cache_dir)
    dest = cache_dir / f"emoji-datasource-{version}"
    if not (dest / ".complete").exists():
        tarball = _npm_pack(f"emoji-datasource@{version}", cache_dir, f"emoji-datasource-{version}.tgz")
        _extract(tarball, dest, r"^package/(emoji\.json)$", "emoji.json")
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


def _extract(tarball: Path, dest: Path, wanted: str, required: str, extra: Mapping[str, Path] | None = None) -> None:
    """Extract the members of ``tarball`` whose path matches ``wanted`` (a regex whose group 1
    is the path to write under ``dest``) into ``dest``, atomically; ``required`` must be among
    them. ``extra``: files copied in too (path under ``dest`` -> file)."""
    wanted = re.compile(wanted)
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
        if not (tmp / required).exists():
            raise UserError(f"{tarball}: has no package/{required}; delete it and run again")
        for name, path in (extra or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, tmp / name)
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
# The other freely licensed styles: Fluent (3D, flat, colour), EmojiOne 2, Noto v1, OpenMoji


@dataclass(frozen=True)
class Style:
    """A freely licensed emoji style from an npm package that is not an emoji-datasource one.
    Its drawings are matched to ``emoji.json`` by codepoint (``FE0F`` dropped on both sides)."""

    package: str  # npm name
    version: str
    kind: str  # "iconify": icons.json of SVG bodies; "webp" / "svg": one file per codepoint sequence
    wanted: str  # regex of the tarball members kept; group 1 = the path under the package folder
    required: str  # a path the extracted package must have
    # npm specs of Iconify sets whose chars.json (codepoints -> icon names) names this set's
    # icons, first match wins; () = the set's own chars.json.
    names: tuple[str, ...] = ()
    skip_categories: tuple[str, ...] = ()  # emoji.json categories this style does not really draw
    swap_tones: bool = False  # the package's 1f3fc and 1f3fd files are each other's


_ICONIFY = r"^package/((?:icons|chars|info)\.json)$"
_NAMED_BY_TWEMOJI_OPENMOJI = ("@iconify-json/twemoji@1.2.5", "@iconify-json/openmoji@1.2.29")
STYLES = {
    # Its flags are generic placeholders, not Fluent art; its medium-light and medium skin-tone
    # files are swapped (checked against the flat and colour sets of the same design).
    "fluent3d": Style("@lobehub/fluent-emoji-3d", "1.1.0", "webp", r"^package/(assets/[0-9a-f-]+\.webp)$", "assets",
                      skip_categories=("Flags",), swap_tones=True),
    "fluentflat": Style("@iconify-json/fluent-emoji-flat", "1.2.6", "iconify", _ICONIFY, "icons.json"),
    "fluent": Style("@iconify-json/fluent-emoji", "1.2.7", "iconify", _ICONIFY, "icons.json",
                    names=("@iconify-json/fluent-emoji-flat@1.2.6",)),
    "emojione": Style("@iconify-json/emojione", "1.2.3", "iconify", _ICONIFY, "icons.json", names=_NAMED_BY_TWEMOJI_OPENMOJI),
    "notov1": Style("@iconify-json/noto-v1", "1.2.5", "iconify", _ICONIFY, "icons.json", names=_NAMED_BY_TWEMOJI_OPENMOJI),
    "openmoji": Style("openmoji", "17.0.0", "svg", r"^package/(color/svg/[0-9A-F-]+\.svg)$", "color/svg"),
}
_TONE_SWAP = {"1f3fc": "1f3fd", "1f3fd": "1f3fc"}


def _tarball_stem(package: str) -> str:
    """What ``npm pack`` names a package's tarball: ``@scope/name`` -> ``scope-name``."""
    return package.lstrip("@").replace("/", "-")


def package_spec(vendor: str, version: str = VERSION) -> str:
    """The npm ``name@version`` a vendor's drawings come from."""
    if vendor in STYLES:
        return f"{STYLES[vendor].package}@{STYLES[vendor].version}"
    return f"{package_name(vendor)}@{version}"


def _fetch_chars(spec: str, cache_dir: Path) -> Path:
    """The ``chars.json`` (codepoints -> icon names) of an Iconify set, fetched once."""
    package, _, version = spec.rpartition("@")
    dest = cache_dir / f"{_tarball_stem(package)}-{version}"
    if not (dest / ".complete").exists():
        tarball = _npm_pack(spec, cache_dir, f"{dest.name}.tgz")
        _extract(tarball, dest, r"^package/(chars\.json)$", "chars.json")
    return dest / "chars.json"


def fetch_style(vendor: str, cache_dir: str | os.PathLike) -> Path:
    """``npm pack`` a style's package (and the Iconify name tables it needs) into ``cache_dir``
    once, and extract what is used into ``cache_dir/<package>-<version>/``; the name tables
    are copied in as ``names/<i>.json`` so the folder is all :func:`style_images` reads."""
    style = STYLES[vendor]
    cache_dir = Path(cache_dir)
    dest = cache_dir / f"{_tarball_stem(style.package)}-{style.version}"
    if (dest / ".complete").exists():
        return dest
    names = [_fetch_chars(spec, cache_dir) for spec in style.names]
    tarball = _npm_pack(f"{style.package}@{style.version}", cache_dir, f"{dest.name}.tgz")
    _extract(tarball, dest, style.wanted, style.required, extra={f"names/{i}.json": p for i, p in enumerate(names)})
    return dest


def codepoint_key(unified: str) -> str:
    """``"1F3F3-FE0F-200D-1F308"`` -> ``"1f3f3-200d-1f308"``: how styles are matched to
    emoji.json; packages disagree on where they write the emoji presentation selector."""
    return "-".join(c for c in unified.lower().replace("_", "-").split("-") if c and c != "fe0f")


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable {what} ({e}); delete the package folder and run again") from None


def iconify_svg(icon_set: Mapping, name: str, size: int = IMAGE_SIZE) -> str | None:
    """SVG markup of icon (or alias) ``name`` of an Iconify JSON set, ``size`` px square, or
    None if the set has no such icon. Aliases are followed to their icon, their flips and
    quarter turns applied; a non-square icon is centred in a square of its longer side."""
    aliases, icons = icon_set.get("aliases") or {}, icon_set.get("icons") or {}
    h_flip = v_flip = False
    turns, seen = 0, set()
    while name not in icons and name in aliases and name not in seen:
        seen.add(name)
        alias = aliases[name]
        h_flip ^= bool(alias.get("hFlip"))
        v_flip ^= bool(alias.get("vFlip"))
        turns += int(alias.get("rotate", 0))
        name = alias.get("parent")
    icon = icons.get(name)
    if icon is None:
        return None
    left, top = icon.get("left", icon_set.get("left", 0)), icon.get("top", icon_set.get("top", 0))
    width, height = icon.get("width", icon_set.get("width", 16)), icon.get("height", icon_set.get("height", 16))
    body = icon["body"]
    if h_flip or v_flip:  # mirror about the icon box's centre line
        body = (f'<g transform="translate({2 * left + width if h_flip else 0} {2 * top + height if v_flip else 0}) '
                f'scale({-1 if h_flip else 1} {-1 if v_flip else 1})">{body}</g>')
    if turns % 4:
        body = f'<g transform="rotate({90 * (turns % 4)} {left + width / 2} {top + height / 2})">{body}</g>'
    side = max(width, height)
    box = f"{left - (side - width) / 2:g} {top - (side - height) / 2:g} {side:g} {side:g}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{size}" height="{size}" viewBox="{box}">{body}</svg>')


def render_svg(svg: str, size: int = IMAGE_SIZE) -> Image.Image:
    """An SVG drawn ``size`` x ``size`` as RGBA, by resvg (pure Rust: no system libraries)."""
    try:
        import resvg_py
    except ImportError:
        raise UserError("rendering SVG emoji needs resvg-py: pip install resvg-py") from None
    try:
        png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True)
    except (ValueError, RuntimeError, OSError) as e:  # malformed markup: ValueError
        raise UserError(f"an SVG could not be rendered ({e})") from None
    with Image.open(io.BytesIO(bytes(png))) as im:
        return im.convert("RGBA")


def style_sources(vendor: str, package_dir: str | os.PathLike) -> dict[str, Path | str]:
    """Codepoint key (:func:`codepoint_key`) -> a raster file (``webp``), an SVG file (``svg``)
    or an icon name (``iconify``) of the style's extracted package."""
    style, package_dir = STYLES[vendor], Path(package_dir)
    sources: dict[str, Path | str] = {}
    if style.kind in ("webp", "svg"):
        folder = package_dir / style.required
        for path in sorted(folder.glob(f"*.{style.kind}")):
            key = codepoint_key(path.stem)
            if style.swap_tones:
                key = "-".join(_TONE_SWAP.get(c, c) for c in key.split("-"))
            sources.setdefault(key, path)
        return sources
    icon_set = _read_json(package_dir / "icons.json", "Iconify icons.json")
    known = set(icon_set.get("icons") or {}) | set(icon_set.get("aliases") or {})
    tables = (sorted((package_dir / "names").glob("*.json"), key=lambda p: int(p.stem)) if style.names
              else [package_dir / "chars.json"])
    for table in tables:
        for code, name in _read_json(table, "Iconify chars.json").items():
            if name in known:
                sources.setdefault(codepoint_key(code), name)
    return sources


def style_images(entries: list[dict], vendor: str, package_dir: str | os.PathLike, size: int = IMAGE_SIZE) -> list[EmojiImage]:
    """Every rendering of ``entries`` (bases and skin-tone variants) the style has. SVG drawings
    are rendered once into ``package_dir/png<size>/`` (kept: a second run renders nothing)."""
    style, package_dir = STYLES[vendor], Path(package_dir)
    sources = style_sources(vendor, package_dir)
    icon_set = _read_json(package_dir / "icons.json", "Iconify icons.json") if style.kind == "iconify" else None
    render_dir = package_dir / f"png{size}"
    concepts = concept_of(entries)
    images = []
    for e in entries:
        if e.get("category") in style.skip_categories:
            continue
        base = base_caption(e)
        variants = [(e, base)] + [(v, skin_tone_caption(base, k)) for k, v in sorted((e.get("skin_variations") or {}).items())]
        for item, caption in variants:
            key = codepoint_key(item["unified"])
            source = sources.get(key)
            if source is None:
                continue
            if style.kind != "webp":
                target = render_dir / f"{key}.png"
                if not target.exists():
                    svg = iconify_svg(icon_set, source, size) if icon_set is not None else Path(source).read_text(encoding="utf-8")
                    try:
                        im = render_svg(svg, size)
                    except UserError as err:
                        raise UserError(f"{vendor} {item['unified']}: {err}") from None
                    render_dir.mkdir(parents=True, exist_ok=True)
                    with atomic_path(target) as tmp:
                        im.save(tmp, format="PNG")
                source = target
            images.append(EmojiImage(vendor, item["unified"], concepts[e["unified"]], caption, Path(source)))
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
    then picks which emoji-datasource vendor's rendering of each val concept is held out, as
    before the other styles came; a second, ``Random(seed + 1)``, then adds to each such val
    concept one of the other training styles' renderings. So the Google/Twitter part of val is
    the same whichever other styles are asked for, and every val concept keeps renderings in train."""
    rng = random.Random(seed)
    seen, held_out = _split_concepts(entries, rng, test_fraction)
    held_out = set(held_out)
    train_vendors = sorted({im.vendor for im in images} & set(TRAIN_VENDORS))
    primary = [v for v in train_vendors if v in DATASOURCE_VENDORS] or train_vendors

    drawn_by: dict[str, set[str]] = {}
    for im in images:
        if im.vendor in train_vendors:
            drawn_by.setdefault(im.concept, set()).add(im.vendor)
    n_val = round(val_fraction * len(seen))
    val_units: list[tuple[str, str]] = []  # (concept, vendor); vendor "*" = every vendor
    for concept in seen:
        if len(val_units) >= n_val:
            break
        vendors = sorted(drawn_by.get(concept, set()) & set(primary))
        if len(primary) >= 2 and len(vendors) >= 2:
            val_units.append((concept, rng.choice(vendors)))
        elif len(primary) == 1 and vendors:
            val_units.append((concept, "*"))
    style_rng = random.Random(seed + 1)
    for concept, vendor in list(val_units):
        others = sorted(drawn_by[concept] - set(primary))
        if vendor != "*" and others:
            val_units.append((concept, style_rng.choice(others)))
    val_set = set(val_units)

    splits: dict[str, list[EmojiImage]] = {s: [] for s in SPLITS}
    for im in images:
        if im.vendor not in train_vendors:
            continue
        if im.concept in held_out:
            splits["test_concept"].append(im)
        elif (im.concept, im.vendor) in val_set or (im.concept, "*") in val_set:
            splits["val"].append(im)
        else:
            splits["train"].append(im)
    train_concepts = {im.concept for im in splits["train"]}
    splits["test_style"] = [im for im in images if im.vendor not in train_vendors and im.concept in train_concepts]
    return splits


def select_vendors(captions: Mapping, vendors: Iterable[str]) -> dict:
    """A COCO captions dict written by :func:`build_emoji_dataset` cut down to ``vendors``'
    images (and their captions): train on some styles, test on others."""
    vendors = set(check_vendors(vendors)) if vendors else set()
    keep = [im for im in captions["images"] if im.get("vendor") in vendors]
    ids = {im["id"] for im in keep}
    return {**captions, "images": keep, "annotations": [a for a in captions["annotations"] if a["image_id"] in ids]}


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
        "info": {"description": f"Emoji captions, split {split}: emoji-datasource {version} names; drawings: "
                                f"{', '.join(package_spec(v, version) for v in vendors) or 'none'}",
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


def licenses_record(vendors: Iterable[str], counts: Mapping[str, int], version: str = VERSION) -> dict:
    """What ``licenses.json`` beside the caption files holds: per vendor, the package its
    drawings came from, the licence, the credit owed, whether it may be trained on, and how many
    images each split has of it."""
    return {v: {"package": package_spec(v, version), "license": LICENSES[v][0], "url": LICENSES[v][1],
                "credit": CREDITS[v], "trainable": v in TRAIN_VENDORS, "images": counts.get(v, 0)} for v in vendors}


def build_emoji_dataset(package_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike, seed: int = 0,
                        test_fraction: float = TEST_CONCEPT_FRACTION, val_fraction: float = VAL_FRACTION,
                        version: str = VERSION, names_dir: str | os.PathLike | None = None) -> list[SplitSummary]:
    """Write ``out_dir/images``, ``out_dir/captions_<split>.json`` and ``out_dir/licenses.json``
    from extracted packages (``{vendor: folder}``: an emoji-datasource one with emoji.json and
    img/<vendor>/64/, or a style's from :func:`fetch_style`). Names and concepts come from
    ``names_dir``'s emoji.json (default: the first emoji-datasource vendor's). Existing images
    are kept and unchanged files are not rewritten, so a second run is a no-op."""
    vendors = check_vendors(package_dirs)
    out_dir = Path(out_dir)
    # Names and the concept split come from one emoji.json (all vendors ship the same file);
    # each vendor's own flags and files decide which of its renderings exist.
    if names_dir is None:
        datasource = [v for v in vendors if v in DATASOURCE_VENDORS]
        if not datasource:
            raise UserError("no emoji.json: pass names_dir, or an emoji-datasource vendor (google, twitter, ...)")
        names_dir = package_dirs[datasource[0]]
    entries = load_emoji_json(names_dir)
    images = [im for v in vendors for im in (list_images(entries, v, package_dirs[v]) if v in DATASOURCE_VENDORS
                                             else style_images(entries, v, package_dirs[v]))]
    splits = assign_splits(images, entries, seed, test_fraction, val_fraction)
    has_style = any(v not in TRAIN_VENDORS for v in vendors)

    ids = image_ids(entries)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    summaries = []
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        path = out_dir / f"captions_{split}.json"
        if split == "test_style" and not has_style:
            path.unlink(missing_ok=True)  # a stale file from a run with --vendors ...,apple would mislead
            continue
        for im in splits[split]:
            write_image(im, image_dir)
            counts.setdefault(im.vendor, {}).setdefault(split, 0)
            counts[im.vendor][split] += 1
        data = coco_captions(split, splits[split], ids, version)
        write_if_changed(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
        summaries.append(SplitSummary(split, len(data["images"]), len(data["annotations"]), len({im.concept for im in splits[split]})))
    record = licenses_record(vendors, counts, version)
    write_if_changed(out_dir / "licenses.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return summaries


def prepare_emoji(out_dir: str | os.PathLike, vendors: Iterable[str] = ("google", "twitter", "apple"), seed: int = 0,
                  cache_dir: str | os.PathLike | None = None, version: str = VERSION) -> list[SplitSummary]:
    """Fetch (``npm pack``, cached) and convert: the whole pipeline behind ``scripts/prepare_emoji.py``.
    The cache defaults to ``out_dir/.cache``."""
    vendors = check_vendors(vendors)
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(out_dir) / ".cache"
    package_dirs = {v: fetch_package(v, cache_dir, version) for v in vendors}
    names_dir = None if any(v in DATASOURCE_VENDORS for v in vendors) else fetch_names(cache_dir, version)
    return build_emoji_dataset(package_dirs, out_dir, seed, version=version, names_dir=names_dir)


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
