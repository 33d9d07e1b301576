"""Reading images: the one path every image takes into the project.

:func:`read_image` serves the CLIs, ``Captioner`` / ``VQAModel``, the datasets, the shards
and the web app alike, so a phone photo reads the same way everywhere. It takes a path, a
``PIL.Image``, encoded bytes, a numpy array or an http(s) URL and returns a fully decoded
8-bit RGB image:

- EXIF orientation is applied (a phone photo taken upright is captioned upright);
- 16- and 32-bit integer and float images are scaled by their real range (see
  :func:`scale_to_uint8`), not clipped at 255 (which turns a 16-bit PNG white) nor divided
  by their type's (a float TIFF in [0, 1] is not near black);
- palette and transparency are composited over white (emoji PNGs), CMYK / YCbCr / HSV /
  LAB are converted, not reinterpreted as RGB;
- an animated image (GIF, APNG, WebP) gives its first frame.

Every failure is a one-line :class:`UserError`: a missing file, a file that is not an image,
a truncated one, a download that fails, and any image over :data:`MAX_PIXELS`.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from captioning.core.errors import UserError

# The decompression-bomb limit, the only one: 80 megapixels is far above any photo a
# captioner needs (a 12-MP phone photo is 12,000,000) and far below what exhausts memory.
# Images over it are refused before their pixels are decoded.
MAX_PIXELS = 80_000_000
MAX_DOWNLOAD_BYTES = 50_000_000  # an image URL's body is refused past this size
DOWNLOAD_TIMEOUT = 20.0  # seconds without progress before a download is given up
DISPLAY_SIDE = 480  # attention maps draw a copy at most this large (captioning.core.visualize)

ImageInput = str | os.PathLike | Image.Image | bytes | bytearray | memoryview | np.ndarray
ACCEPTED = "a path, an http(s) URL, a PIL image, encoded bytes or an (H, W[, C]) numpy array"


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def describe(source) -> str:
    """How errors name an image source."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"the {source.mode} image"
    if isinstance(source, np.ndarray):
        return f"the {source.dtype} array of shape {source.shape}"
    return "the image bytes"


def read_image(source: ImageInput, max_pixels: int = MAX_PIXELS, timeout: float = DOWNLOAD_TIMEOUT,
               max_bytes: int = MAX_DOWNLOAD_BYTES) -> Image.Image:
    """``source`` (path, URL, PIL image, encoded bytes or an (H, W[, C]) array) -> RGB image,
    fully decoded, upright. A bad source raises :class:`UserError` with one line."""
    name = describe(source)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_size((source.shape[1], source.shape[0]), name, max_pixels)
        return array_to_rgb(source, name)
    if isinstance(source, Image.Image):
        _check_size(source.size, name, max_pixels)
        return to_rgb(ImageOps.exif_transpose(_first_frame(source)))
    if is_url(source):
        return _decode(io.BytesIO(download(source, timeout, max_bytes)), name, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), name, max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise UserError(f"{path}: {'no file matches' if glob.has_magic(str(path)) else 'no such file'}")
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not an image")
        return _decode(path, name, max_pixels)
    raise UserError(f"cannot read an image from {type(source).__name__} (give {ACCEPTED})")


def _decode(file, name: str, max_pixels: int, scale_down: bool = False) -> Image.Image:
    # Truncated files are an error, not half an image.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            # PIL's own bomb check fires only at its own, larger limit; ours comes first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as im:
                _check_size(im.size, name, max_pixels)
                if scale_down:  # only whether it decodes matters: a JPEG decodes at 1/8 scale
                    im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                im.load()  # the first frame of an animation
                return to_rgb(ImageOps.exif_transpose(im))
    except UserError:
        raise
    except Image.DecompressionBombError:
        raise UserError(f"{name}: image is over the limit of {max_pixels:,} pixels "
                        "(captioning.core.images.MAX_PIXELS)") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{name}: not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UserError(f"{name}: corrupt or truncated image ({e})") from None


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise UserError(f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                        "(captioning.core.images.MAX_PIXELS)")
    if w < 1 or h < 1:
        raise UserError(f"{name}: image is empty ({w}x{h})")


def _first_frame(im: Image.Image) -> Image.Image:
    """A PIL image handed in may sit on any frame of an animation; captions describe the first.
    The caller's image is left on the frame it was on."""
    if getattr(im, "n_frames", 1) > 1 and im.tell() != 0:
        position = im.tell()
        try:
            im.seek(0)
            return im.copy()
        finally:
            im.seek(position)
    return im


def to_rgb(im: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``im``, whatever its mode.

    - alpha (RGBA, LA, PA, premultiplied RGBa / La, palette transparency) is composited over
      white: an emoji's transparent background is white paper, not black;
    - 16/32-bit integer (I;16*, I) and float (F) images are scaled by their real range;
    - CMYK, YCbCr, HSV, LAB, 1, L, P are converted by PIL's own colour conversions.
    """
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return Image.fromarray(scale_to_uint8(np.asarray(im))).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA") if im.mode != "La" else im.convert("LA").convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """A high-bit-depth or float image -> uint8, by its real range, not its type's:

    - unsigned integers: the smallest common bit depth that holds them (8, 10, 12, 14, 16 or
      32 bits), so a 16-bit PNG reads as its 8-bit self, a 12-bit sensor image stored in 16
      bits is not 16x too dark, and 8-bit values in a 32-bit "I" image stay as they are;
    - floats with every value in [0, 1] (the usual convention): times 255; else within
      [0, 255] (PIL's own, converting "L" to "F"): as they are;
    - anything else (negative values, floats in arbitrary units such as a depth map): its
      smallest to largest value becomes 0..255.
    Non-finite values count as 0.
    """
    kind = np.asarray(a).dtype.kind
    a = np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size == 0:
        return a.astype(np.uint8)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0 and kind in "iub":
        lo, hi = 0.0, next(2.0 ** bits - 1 for bits in (8, 10, 12, 14, 16, 32, 64) if hi <= 2.0 ** bits - 1)
    elif lo >= 0 and hi <= 255.0:
        lo, hi = 0.0, 1.0 if hi <= 1.0 else 255.0
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).clip(0, 255).astype(np.uint8)


def array_to_rgb(a: np.ndarray, name: str = "the array") -> Image.Image:
    """An (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> RGB image. uint8 is taken as is;
    bool is black and white; other integer and float types are scaled as in :func:`scale_to_uint8`
    (an RGBA array's alpha is composited over white like an image's)."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise UserError(f"{name}: an image array is (H, W), (H, W, 3) or (H, W, 4) (channels last)")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise UserError(f"{name}: an image array holds numbers, not {a.dtype}")
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).any():
            raise UserError(f"{name}: every value is NaN or infinite, so there is no picture in it")
        if a.ndim == 3 and a.shape[2] == 4:  # scale colour and alpha each by its own range
            a = np.concatenate([scale_to_uint8(a[..., :3]), scale_to_uint8(a[..., 3:])], axis=2)
        else:
            a = scale_to_uint8(a)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.ndim if a.ndim == 2 else a.shape[2]]
    return to_rgb(Image.fromarray(np.ascontiguousarray(a), mode=mode))


def download(url: str, timeout: float = DOWNLOAD_TIMEOUT, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
    """The body of ``url``, refused past ``max_bytes`` (also when the server does not say its
    length) or after ``timeout`` seconds without progress. Failures are one-line UserErrors."""
    import urllib.error  # here, not at the top: urllib.request costs a tenth of a second to import
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "show-attend-answer"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise UserError(f"{url}: {int(length):,} bytes, over the download limit of {max_bytes:,} bytes")
            body = response.read(max_bytes + 1)
    except UserError:
        raise
    except urllib.error.HTTPError as e:
        raise UserError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except urllib.error.URLError as e:
        raise UserError(f"{url}: download failed ({e.reason})") from None
    except (TimeoutError, OSError, ValueError) as e:
        raise UserError(f"{url}: download failed ({type(e).__name__}: {e})") from None
    if len(body) > max_bytes:
        raise UserError(f"{url}: over the download limit of {max_bytes:,} bytes")
    return body


def is_single_image(source) -> bool:
    """One image (a path, URL, PIL image, bytes or array), as opposed to a list of them."""
    return isinstance(source, ImageInput)


def image_sources(images) -> tuple[Iterable, bool]:
    """What an API call was given -> (the images to read, lazily, and whether it was one image).
    Anything that is neither an image nor a collection of them (None, a number) is refused
    here, naming what is accepted, instead of failing inside the iteration."""
    if is_single_image(images):
        return [images], True
    if isinstance(images, Iterable) and not isinstance(images, (dict, set, frozenset)):
        return images, False
    raise UserError(f"cannot read images from {type(images).__name__}: give one image ({ACCEPTED}) "
                    "or a list of them")


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The images of a folder (by extension, as PIL knows them), sorted by name; not recursive."""
    known = {ext.lower() for ext in Image.registered_extensions()}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in known and p.is_file())


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Command-line image arguments -> the images they name, in order: a folder gives its images
    (sorted), a glob pattern (``photos/*.jpg``, for shells that do not expand it) its matches
    (sorted); a URL or a file is itself. A pattern that matches nothing stays as given, so
    reading it reports it ("no file matches", as the other images are still read)."""
    out: list[str] = []
    for s in sources:
        if is_url(s):
            out.append(s)
        elif os.path.isdir(s):
            out.extend(str(p) for p in image_files(s))
        elif not os.path.exists(s) and glob.has_magic(s):
            out.extend(sorted(glob.glob(s)) or [s])
        else:
            out.append(s)
    return out


@dataclass
class PreparedImage:
    """An image read and resized for a model; the full-size decode is already gone."""
    name: str | None  # the path or URL it came from; None for an in-memory image
    pixels: np.ndarray  # uint8 (3, S, S), the model's input
    display: Image.Image | None = None  # a copy at most DISPLAY_SIDE px, for attention maps


def prepare_image(source: ImageInput, size: int, keep_display: bool = False) -> PreparedImage:
    from captioning.core.transforms import resize_uint8

    im = read_image(source)
    display = None
    if keep_display:
        display = im.copy()
        display.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.BICUBIC)
    name = str(source) if isinstance(source, (str, os.PathLike)) else None
    return PreparedImage(name, resize_uint8(im, size), display)


def prepare_images(sources: Iterable[ImageInput], size: int, batch_size: int,
                   keep_display: bool = False) -> Iterator[list[PreparedImage | UserError]]:
    """Read ``sources`` lazily, ``batch_size`` at a time: lists of PreparedImage, or the
    UserError an unreadable one raised, in order. Each image is resized as soon as it is
    decoded, so a batch holds model-sized pixels only, never a batch of full-size photos."""
    chunk: list[PreparedImage | UserError] = []
    for source in sources:
        try:
            chunk.append(prepare_image(source, size, keep_display))
        except UserError as e:
            chunk.append(e)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def check_readable(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> UserError | None:
    """The UserError reading ``path`` would raise, or None, found cheaply: the pixels are decoded
    (so a truncated file shows) but a JPEG at 1/8 scale. For refusing a split's bad images up
    front, before hours of work stop at one of them."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        _decode(path, str(path), max_pixels, scale_down=True)
    except UserError as e:
        return e
    return None


def split_readable(records: Sequence) -> tuple[list, list[UserError]]:
    """``records`` (anything with an image ``path``) -> (those whose image reads, in order;
    what :func:`check_readable` found wrong with the others, in order)."""
    kept, bad = [], []
    for record in records:
        problem = check_readable(record.path)
        if problem is None:
            kept.append(record)
        else:
            bad.append(problem)
    return kept, bad
