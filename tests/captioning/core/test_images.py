"""captioning.core.images: every image source and PIL mode reads as the upright 8-bit RGB it shows.

Every file is made here: an EXIF-rotated JPEG, 16-bit PNG and TIFF, float TIFF, every PIL
mode, animations, and a local HTTP server for URLs (one that serves, one that fails).
"""

from __future__ import annotations

import functools
import http.server
import io
import threading

import numpy as np
import pytest
from PIL import Image

from captioning.core.errors import UserError
from captioning.core.images import MAX_PIXELS, expand_sources, read_image, scale_to_uint8

RED = (220, 30, 40)


def halves(size=(40, 20)) -> Image.Image:
    """Left half red, right half blue: orientation and colour are both visible."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2:] = (20, 40, 230)
    return Image.fromarray(a)


def test_exif_orientation_is_applied(tmp_path):
    upright = halves()
    # Orientation 6: the camera stored the pixels turned 90 degrees; viewers rotate them back.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    im = read_image(path)
    assert im.size == upright.size  # 40 x 20 again, not the stored 20 x 40
    diff = np.abs(np.asarray(im, np.int16) - np.asarray(upright, np.int16))
    assert diff.mean() < 6  # JPEG noise only; sideways would differ by ~100 on half the pixels


def gradient16(w=64, h=8) -> np.ndarray:
    return np.tile(np.linspace(0, 65535, w).astype(np.uint16), (h, 1))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grayscale_files_keep_their_tones(tmp_path, suffix):
    a = gradient16()
    path = tmp_path / f"gray16{suffix}"
    Image.fromarray(a).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really stored with 16 bits
    got = np.asarray(read_image(path))[..., 0].astype(int)
    want = np.round(a / 257).astype(int)
    assert np.abs(got - want).max() <= 1  # was all white (255) before


def test_float_tiff_uses_its_range(tmp_path):
    a = np.tile(np.linspace(0.0, 1.0, 50, dtype=np.float32), (4, 1))
    path = tmp_path / "float.tif"
    Image.fromarray(a, mode="F").save(path)
    got = np.asarray(read_image(path))[..., 0].astype(int)
    assert np.abs(got - np.round(a * 255)).max() <= 1  # not nearly black
    # In arbitrary units (a depth map in centimetres): the whole range is shown.
    Image.fromarray(a * 400.0 + 100.0, mode="F").save(path)
    got = np.asarray(read_image(path))[..., 0]
    assert got.max() == 255 and got[:, 0].max() == 0 and 120 <= got[0, 25] <= 135


def pil_in_mode(mode: str) -> Image.Image:
    """The red-and-blue picture in ``mode``, as PIL converts to it."""
    im = halves()
    if mode in ("I;16", "I", "F", "1", "L", "LA", "La"):
        return im.convert("L").convert(mode) if mode != "La" else im.convert("LA").convert("La")
    if mode == "PA":
        return im.convert("RGBA").convert("PA")
    return im.convert(mode)


MODES = ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F"]


@pytest.mark.parametrize("mode", MODES)
def test_every_pil_mode_becomes_8_bit_rgb(mode):
    src = pil_in_mode(mode)
    assert src.mode == mode
    im = read_image(src)
    assert im.mode == "RGB" and im.size == src.size
    a = np.asarray(im, np.int16)
    left, right = a[:, :10].mean(axis=(0, 1)), a[:, -10:].mean(axis=(0, 1))
    if mode in ("1",):
        return  # dithered black and white: only the type is checked
    if mode in ("L", "LA", "La", "I", "I;16", "F"):  # gray: red and blue have different lightness
        gray = np.asarray(halves().convert("L"), np.int16)
        assert np.abs(a[..., 0] - gray).max() <= 2
        return
    # Colour modes keep the colours: red stays red on the left, blue on the right.
    assert left[0] > 150 and left[2] < 90, (mode, left)
    assert right[2] > 150 and right[0] < 90, (mode, right)


def test_transparency_is_white_paper():
    a = np.zeros((10, 10, 4), np.uint8)  # fully transparent black
    a[:5, :, :] = (*RED, 255)  # top half opaque red
    for im in (Image.fromarray(a, "RGBA"), Image.fromarray(a, "RGBA").convert("PA"),
               Image.fromarray(a, "RGBA").convert("LA")):
        got = np.asarray(read_image(im))
        assert (got[7:] == 255).all(), im.mode  # the transparent half is white, not black
    p = Image.fromarray(a[..., :3]).convert("P")
    p.info["transparency"] = p.getpixel((9, 9))
    assert (np.asarray(read_image(p))[7:] == 255).all()


def test_animated_images_give_their_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert tuple(np.asarray(read_image(path))[8, 8]) == (255, 0, 0)
    with Image.open(path) as im:
        im.seek(1)
        assert tuple(np.asarray(read_image(im))[8, 8]) == (255, 0, 0)
        assert im.tell() == 1  # the caller's image is left where it was


def test_bytes_and_arrays():
    buf = io.BytesIO()
    halves().save(buf, format="PNG")
    assert np.array_equal(np.asarray(read_image(buf.getvalue())), np.asarray(halves()))
    rgb = np.asarray(halves())
    assert np.array_equal(np.asarray(read_image(rgb)), rgb)
    assert np.array_equal(np.asarray(read_image(rgb.astype(np.float32) / 255)), rgb)  # float in [0, 1]
    gray16 = gradient16()
    assert np.asarray(read_image(gray16))[..., 0].max() == 255
    with pytest.raises(UserError, match="channels last"):
        read_image(np.zeros((3, 8, 8), np.uint8).transpose(1, 2, 0)[None])
    with pytest.raises(UserError, match="cannot read an image from int"):
        read_image(42)


def test_scale_to_uint8_handles_flat_and_non_finite_images():
    assert (scale_to_uint8(np.zeros((4, 4), np.uint16)) == 0).all()
    a = np.array([[np.nan, 0.5, np.inf]], np.float32)
    assert scale_to_uint8(a).tolist() == [[0, 128, 0]]
    twelve_bit = np.array([[0, 4095]], np.uint16)  # a 12-bit sensor's values in a 16-bit file
    assert scale_to_uint8(twelve_bit).tolist() == [[0, 255]]
    signed = np.array([[-10, 0, 10]], np.int32)
    assert scale_to_uint8(signed).tolist() == [[0, 128, 255]]


def test_decompression_bomb_error_says_the_limit(bad_files):
    with pytest.raises(UserError, match=f"over the limit of {MAX_PIXELS:,}"):
        read_image(bad_files / "bomb.png")
    with pytest.raises(UserError, match="over the limit of 100"):
        read_image(halves(), max_pixels=100)


def test_missing_folder_and_corrupt_files(bad_files, tmp_path):
    for name, message in [("nope.png", "no such file"), ("text.jpg", "not an image"), ("truncated.png", "truncated")]:
        with pytest.raises(UserError, match=message):
            read_image(bad_files / name)
    with pytest.raises(UserError, match="is a folder"):
        read_image(tmp_path)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over ``tmp_path`` in a thread -> (root folder, base URL)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_downloaded(http_root):
    root, base = http_root
    halves().save(root / "pic.png")
    assert np.array_equal(np.asarray(read_image(f"{base}/pic.png")), np.asarray(halves()))
    with pytest.raises(UserError, match=r"/missing.png: download failed \(HTTP 404"):
        read_image(f"{base}/missing.png")
    with pytest.raises(UserError, match="over the download limit of 100 bytes"):
        read_image(f"{base}/pic.png", max_bytes=100)
    (root / "page.png").write_text("<html>not an image</html>")
    with pytest.raises(UserError, match="not an image"):
        read_image(f"{base}/page.png")


def test_unreachable_url_is_one_line():
    with pytest.raises(UserError, match="download failed") as e:
        read_image("http://127.0.0.1:9/x.png", timeout=2)  # port 9 (discard): refused
    assert "\n" not in str(e.value)


def test_folders_and_globs_expand_sorted(tmp_path):
    for name in ["b.png", "a.jpg", "c.txt", "d.JPEG"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert expand_sources([str(tmp_path)]) == [str(tmp_path / n) for n in ["a.jpg", "b.png", "d.JPEG"]]
    assert expand_sources([str(tmp_path / "*.png"), "http://x/y.png"]) == [str(tmp_path / "b.png"), "http://x/y.png"]
    assert expand_sources([str(tmp_path / "*.gif")]) == [str(tmp_path / "*.gif")]  # reported when read
    with pytest.raises(UserError, match=r"\*\.gif: no file matches$"):  # not "no such file"
        read_image(tmp_path / "*.gif")
    with pytest.raises(UserError, match="no such file$"):
        read_image(tmp_path / "plain.gif")
