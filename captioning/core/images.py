"""Reading images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image, ImageFile

from captioning.core.errors import UserError


# 80 megapixels: far above any photo a captioner needs, far below what exhausts memory.
MAX_PIXELS = 80_000_000


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` as RGB, fully decoded. Transparent images are composited over white."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    # PIL's own bomb check only warns below 2x its limit; we refuse outright, before decoding.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise UserError(f"{path}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
                im.load()
                return to_rgb(im)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"{path}: refused as a decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise UserError(f"{path}: not an image PIL can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path}: corrupt or truncated image ({e})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB copy of ``im``; alpha (emoji PNGs) is composited over white, not dropped to black."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")
