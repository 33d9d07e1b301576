"""The `caption` console script, run as a user runs it (a subprocess) and in-process."""

import json
import subprocess
import sys

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


def test_unwritable_attention_map_keeps_the_caption(trained, tmp_path):
    ckpt, _, records, *_ = trained
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_caption(records[0].path, "--checkpoint", ckpt, "--attention-map", blocker / "sub" / "att.png")
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.startswith(str(records[0].path))


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
