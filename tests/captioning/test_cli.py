"""The `caption` console script, run as a user runs it (a subprocess) and in-process."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.cli import main
from captioning.core.commandline import run
from captioning.core.errors import UserError


def run_caption(*args):
    return subprocess.run([sys.executable, "-m", "captioning.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_captions_good_images_and_writes_attention_maps(trained, tmp_path):
    ckpt, _, records, *_ = trained
    a, b = records[0].path, records[1].path
    out = tmp_path / "att.png"
    r = run_caption(a, b, "--checkpoint", ckpt, "--attention-map", out, "--beam-size", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{a}: ")
    assert lines[0].split(": ", 1)[1] in records[0].captions
    for p in (tmp_path / "att-1.png", tmp_path / "att-2.png"):
        with Image.open(p) as im:
            assert im.size[0] > 100
    assert r.stderr == ""


def test_json_output(trained, capsys):
    ckpt, _, records, *_ = trained
    assert main([str(records[2].path), "--checkpoint", str(ckpt), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out.strip())
    assert {"image", "caption", "tokens", "score"} <= set(obj)
    assert obj["caption"] in records[2].captions and obj["tokens"] == obj["caption"].split()


def test_bad_images_get_one_line_each_and_good_ones_are_still_captioned(trained, bad_files):
    ckpt, _, records, *_ = trained
    names = [bad_files / "missing.jpg", bad_files / "text.jpg", bad_files / "truncated.png", bad_files / "bomb.png"]
    r = run_caption(*names, records[0].path, "--checkpoint", ckpt)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 4, r.stderr
    assert all(line.startswith("caption: error: ") for line in err)
    assert "Traceback" not in r.stderr
    assert "no such file" in err[0] and "not an image" in err[1] and "truncated" in err[2] and "pixels" in err[3]
    assert r.stdout.strip().startswith(f"{records[0].path}: ")


def test_bad_checkpoint_and_bad_device(trained, bad_files, tmp_path):
    ckpt, _, records, *_ = trained
    r = run_caption(records[0].path, "--checkpoint", bad_files / "text.jpg")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a valid checkpoint" in r.stderr
    r = run_caption(records[0].path, "--checkpoint", tmp_path / "nope.safetensors")
    assert r.returncode == 2 and "no such checkpoint" in r.stderr
    r = run_caption(records[0].path, "--checkpoint", ckpt, "--device", "bogus")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_unwritable_attention_map_is_refused_up_front(trained, tmp_path):
    """A map path under an existing file used to fail after captioning with "File exists"."""
    ckpt, _, records, *_ = trained
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_caption(records[0].path, "--checkpoint", ckpt, "--attention-map", blocker / "sub" / "att.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"caption: error: {blocker / 'sub' / 'att.png'}: cannot be written, "
                                             f"{blocker} is a file, not a folder"]
    r = run_caption(records[0].path, "--checkpoint", ckpt, "--attention-map", tmp_path / "att.gif")
    assert r.returncode == 2 and "cannot write an attention map as .gif" in r.stderr


def test_attention_map_format_follows_the_suffix(trained, tmp_path):
    """out.jpg used to hold PNG bytes."""
    ckpt, _, records, *_ = trained
    for suffix, fmt in [(".jpg", "JPEG"), (".png", "PNG")]:
        out = tmp_path / f"att{suffix}"
        assert main([str(records[0].path), "--checkpoint", str(ckpt), "--attention-map", str(out)]) == 0
        with Image.open(out) as im:
            assert im.format == fmt


def test_absurd_and_bad_arguments_are_one_line(trained, capsys):
    """--beam-size 1000000 used to end in a 33-line traceback."""
    ckpt, _, records, vocab, _ = trained
    image = str(records[0].path)
    for flags, message in [(["--beam-size", "1000000"], f"beam_size must be between 1 and {len(vocab)}"),
                           (["--max-length", "100000"], "max_length must be between 1 and 1000"),
                           (["--beam-size", str(len(vocab)), "--batch-size", "100000"], "GiB for beam search")]:
        assert main([image, "--checkpoint", str(ckpt), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    for flags in (["--beam-size", "0"], ["--batch-size", "0"], ["--max-length", "-1"], ["--beam-size", "x"]):
        with pytest.raises(SystemExit) as e:
            main([image, "--checkpoint", str(ckpt), *flags])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "must be at least 1" in err or "not a whole number" in err


def test_api_refuses_bad_arguments(trained):
    from captioning.api import Captioner

    ckpt, _, records, vocab, _ = trained
    captioner = Captioner.from_pretrained(ckpt)
    image = records[0].path
    for kw, message in [({"beam_size": 0}, "beam_size must be between 1"),
                        ({"beam_size": len(vocab) + 1}, "beam_size must be between 1"),
                        ({"beam_size": 2.5}, "beam_size must be a whole number"),
                        ({"max_length": -1}, "max_length must be between 1"),
                        ({"batch_size": 0}, "batch_size must be at least 1"),
                        ({"temperature": 0.0}, "temperature must be a number above 0")]:
        with pytest.raises(UserError, match=message):
            captioner(image, **kw)


def test_folders_globs_and_checkpoint_folders(trained, tmp_path):
    """A folder is its images, sorted; --checkpoint takes a training output folder (best, else last)."""
    ckpt, _, records, *_ = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, r in enumerate(records[:3]):
        shutil.copy(r.path, folder / f"{2 - k}.png")
    (folder / "notes.txt").write_text("not an image")
    r = run_caption(folder, "--checkpoint", ckpt.parent, "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    assert [line.split(": ")[0] for line in r.stdout.splitlines()] == [str(folder / f"{k}.png") for k in range(3)]
    r2 = run_caption(str(folder / "*.png"), "--checkpoint", ckpt)
    assert r2.returncode == 0 and r2.stdout == r.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_caption(records[0].path, "--checkpoint", empty)
    assert r.returncode == 2
    assert f"{empty}: a folder without a checkpoint (looked for best.safetensors and last.safetensors)" in r.stderr


def test_exif_rotated_photo_is_captioned_upright(trained, tmp_path):
    """The caption, score and attention of a phone photo stored sideways (EXIF orientation 6)
    equal those of the upright picture."""
    from captioning.api import Captioner

    ckpt, _, records, *_ = trained
    captioner = Captioner.from_pretrained(ckpt)
    with Image.open(records[0].path) as im:
        upright = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    phone = tmp_path / "phone.png"
    upright.transpose(Image.Transpose.ROTATE_90).save(phone, exif=exif)
    a, b = captioner(upright), captioner(phone)
    assert a.caption == b.caption and abs(a.score - b.score) < 1e-4
    assert np.allclose(a.attention, b.attention, atol=1e-4)


def test_api_reads_any_pil_mode_bytes_and_urls(trained, tmp_path):
    """Captioner(pil) with RGBA, LA, P, CMYK, I;16, ... used to fail with tensor-size errors."""
    from captioning.api import Captioner

    ckpt, _, records, *_ = trained
    captioner = Captioner.from_pretrained(ckpt)
    with Image.open(records[0].path) as im:
        rgb = im.convert("RGB")
    want = captioner(rgb).caption
    for mode in ("RGBA", "P", "CMYK", "YCbCr", "HSV", "LAB"):
        # Each mode is read as its RGB conversion. Converting to P (a 216-colour web palette,
        # dithered) or to LAB changes pixels, and the tiny model trained above may word such a
        # copy differently ("a red circle" for "red circle"): compare with that copy's caption.
        image = rgb.convert(mode)
        assert captioner(image).caption == captioner(image.convert("RGB")).caption, mode
    for mode in ("RGBA", "CMYK"):  # lossless from RGB: the same caption as the original
        assert captioner(rgb.convert(mode)).caption == want, mode
    for mode in ("L", "LA", "I", "I;16", "F", "1"):
        assert isinstance(captioner(rgb.convert("L").convert(mode)).caption, str)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    assert captioner(buf.getvalue()).caption == want
    assert captioner(np.asarray(rgb)).caption == want
    results = captioner([rgb, np.asarray(rgb)], batch_size=1)
    assert [r.caption for r in results] == [want, want]


@pytest.mark.slow
def test_memory_stays_flat_with_many_photos(trained, tmp_path):
    """Every photo used to be decoded at full size and held until the end. Peak memory (RSS of
    the caption process) with 40 photos of 6 MP stays within 100 MB of that with 4; holding
    them would add 36 x 18 MB = 648 MB."""
    ckpt, *_ = trained
    photo = tmp_path / "photo.jpg"
    ramp = np.linspace(0, 255, 3000, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(ramp, (2000, 1))] * 3, axis=2)).save(photo, quality=80)  # 3000 x 2000

    def peak_rss(n: int) -> int:
        folder = tmp_path / f"many{n}"
        folder.mkdir()
        for k in range(n):
            shutil.copy(photo, folder / f"{k:03d}.jpg")
        probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "print(r.returncode, r.stdout.count('\\n'), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        r = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "captioning.cli", str(folder),
                            "--checkpoint", str(ckpt), "--batch-size", "4", "--beam-size", "1"],
                           capture_output=True, text=True, timeout=600)
        code, lines, kib = map(int, r.stdout.split())
        assert code == 0 and lines == n, r.stderr
        return kib * 1024

    few, many = peak_rss(4), peak_rss(40)
    assert many - few < 100 * 2**20, (few / 2**20, many / 2**20)


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise UserError("broken.jpg: not an image")


def test_user_error_from_a_loader_worker_is_still_one_line(capsys):
    """A DataLoader re-raises a worker's UserError with the worker's traceback in its message."""
    def body():
        for _ in torch.utils.data.DataLoader(_Unreadable(), num_workers=1):
            pass
        return 0

    assert run("train_caption", body) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["train_caption: error: broken.jpg: not an image"], err


def test_json_lists_the_beams_alternatives(trained, capsys):
    ckpt, _, records, *_ = trained
    assert main([str(records[2].path), "--checkpoint", str(ckpt), "--json", "--beam-size", "3"]) == 0
    obj = json.loads(capsys.readouterr().out.strip())
    scores = [obj["score"]] + [a["score"] for a in obj["alternatives"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert all(a["tokens"] == a["caption"].split() and a["caption"] != obj["caption"] for a in obj["alternatives"])
    assert main([str(records[2].path), "--checkpoint", str(ckpt), "--json", "--beam-size", "1"]) == 0
    assert "alternatives" not in json.loads(capsys.readouterr().out.strip())


def test_html_report_path_is_checked_before_any_work(trained, tmp_path):
    """--html to a folder or under a file used to fail only after every image was captioned."""
    ckpt, _, records, *_ = trained
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for bad, message in [(tmp_path, f"{tmp_path}: is a folder; give a file name"),
                         (blocker / "r.html", f"{blocker / 'r.html'}: cannot be written, {blocker} is a file, not a folder")]:
        r = run_caption(records[0].path, records[1].path, "--checkpoint", ckpt, "--html", bad)
        assert r.returncode == 2 and r.stdout == ""  # nothing was captioned
        assert r.stderr.strip().splitlines() == [f"caption: error: {message}"]


def test_a_glob_that_matches_nothing_says_so(trained, tmp_path):
    ckpt, _, records, *_ = trained
    r = run_caption(str(tmp_path / "*.xyz"), records[0].path, "--checkpoint", ckpt)
    assert r.returncode == 2 and r.stdout.startswith(f"{records[0].path}: ")
    assert r.stderr.strip().splitlines() == [f"caption: error: {tmp_path / '*.xyz'}: no file matches"]


def test_a_reader_that_stops_reading_ends_the_command_quietly(trained, tmp_path):
    """`caption FOLDER | head -1` printed a 15-line BrokenPipeError traceback and exited 1.
    The reader here closes the pipe before the first line, so every write meets it closed."""
    ckpt, _, records, *_ = trained
    folder = tmp_path / "photos"
    folder.mkdir()
    for k, rec in enumerate(records[:4]):
        shutil.copy(rec.path, folder / f"{k}.png")
    p = subprocess.Popen([sys.executable, "-m", "captioning.cli", str(folder), "--checkpoint", str(ckpt),
                          "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and err == ""
    # and through a real shell pipeline, as a user types it
    r = subprocess.run(f"{sys.executable} -m captioning.cli {folder} --checkpoint {ckpt} --batch-size 1 | head -1",
                       shell=True, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stderr == ""
