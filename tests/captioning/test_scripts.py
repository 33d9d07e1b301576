"""scripts/evaluate_caption.py and the resume checks of scripts/train_caption.py, on the shapes."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from captioning.core.checkpoint import read_checkpoint, write_checkpoint
from captioning.core.commandline import run
from captioning.core.errors import UserError
from captioning.core.flags import read_resumed, recorded_command
from tests.conftest import load_script


def evaluate(capsys, *args) -> tuple[int, str, str]:
    script = load_script("evaluate_caption")
    parsed = script.get_args_parser().parse_args([str(a) for a in args])
    code = run("evaluate_caption", lambda: script.main(parsed))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def split_with_a_bad_image(shapes, tmp_path):
    """The shapes' images copied, one of them truncated."""
    records, _, ann, img_dir = shapes
    images = tmp_path / "images"
    shutil.copytree(img_dir, images)
    bad = images / records[3].path.name
    bad.write_bytes(bad.read_bytes()[:100])
    return ann, images, bad


def test_unreadable_images_are_refused_or_skipped(trained, split_with_a_bad_image, tmp_path, capsys):
    """One unreadable image used to stop the whole evaluation midway."""
    ckpt, _, records, *_ = trained
    ann, images, bad = split_with_a_bad_image
    common = ["--captions", ann, "--images", images, "--checkpoint", ckpt, "--no-meteor", "--json", "--beam-size", "1"]
    code, out, err = evaluate(capsys, *common)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and f"1 of {len(records)} images cannot be read" in err and str(bad) in err
    results = tmp_path / "results.json"
    code, out, err = evaluate(capsys, *common, "--skip-bad-images", "--results-out", results)
    assert code == 0, err
    assert f"skipped: {bad}" in err
    scores = json.loads(out)
    assert 0 <= scores["CIDEr"] and "testlen" not in err
    captioned = {r["image_id"] for r in json.loads(results.read_text())}
    assert len(captioned) == len(records) - 1 and records[3].image_id not in captioned


def test_partial_results_are_refused_unless_allowed(trained, shapes, tmp_path, capsys):
    """A results file for 1 of the images used to be scored silently on that subset."""
    records, _, ann, _ = shapes
    results = tmp_path / "partial.json"
    results.write_text(json.dumps([{"image_id": records[0].image_id, "caption": records[0].captions[0]}]))
    code, out, err = evaluate(capsys, "--captions", ann, "--results", results, "--no-meteor", "--json")
    errors = [line for line in err.splitlines() if line.startswith("evaluate_caption: error: ")]
    assert code == 2 and out == "" and len(errors) == 1  # the other lines are pycocotools' progress
    assert f"captions 1 of the {len(records)} annotated images" in errors[0] and "--allow-partial" in errors[0]
    code, out, err = evaluate(capsys, "--captions", ann, "--results", results, "--no-meteor", "--json", "--allow-partial")
    assert code == 0 and json.loads(out)["exact_match"] == 1.0


def resume_args(script, run_dir: Path, *flags: str):
    argv = ["--images", "imgs", "--captions", "c.json", "--out", str(run_dir), "--resume", str(run_dir), *flags]
    return script.get_args_parser().parse_args(argv), ["scripts/train_caption.py", *argv]


def test_resume_refuses_flags_that_change_the_model_and_records_the_first_command(trained, tmp_path):
    """Resuming with another --image-size was silently ignored, and the new flag recorded as
    the command that produced the weights."""
    script = load_script("train_caption")
    ckpt, *_ = trained
    run_dir = tmp_path / "run"
    original = ["scripts/train_caption.py", "--images", "imgs", "--captions", "c.json", "--out", str(run_dir),
                "--image-size", "96", "--hidden-dim", "64", "--epochs", "3"]
    saved = read_checkpoint(ckpt)
    saved.extra["command"] = original
    write_checkpoint(run_dir / "last.safetensors", saved)

    args, argv = resume_args(script, run_dir, "--image-size", "128", "--hidden-dim", "32", "--epochs", "5")
    with pytest.raises(UserError) as e:
        recorded_command(script.get_args_parser(), argv, read_resumed(args, "caption"), script.RESUME_FIXED)
    message = str(e.value)
    assert "--image-size 128 (the run has 96)" in message and "--hidden-dim 32 (the run has 64)" in message
    assert "--epochs" not in message

    # The same values, or none, are fine; the folder means its last.safetensors.
    args, argv = resume_args(script, run_dir, "--image-size", "96", "--epochs", "5")
    command = recorded_command(script.get_args_parser(), argv, read_resumed(args, "caption"), script.RESUME_FIXED)
    assert args.resume == str(run_dir / "last.safetensors")
    assert command[: len(original)] == original and command[len(original):] == argv[1:]
    replay = script.get_args_parser().parse_args(command[1:])
    assert replay.image_size == 96 and getattr(replay, "DecoderConfig.hidden_dim") == 64
    assert getattr(replay, "CaptionTrainConfig.epochs") == 5


def test_export_checkpoint_records_results_notes_and_provenance(trained, tmp_path, capsys):
    ckpt, *_ = trained
    script = load_script("export_checkpoint")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"val/beam1": {"CIDEr": 1.5}}))
    out = tmp_path / "shipped.safetensors"
    argv = [str(ckpt), str(out), "--fp16", "--metrics", str(metrics), "--note", "stage 1: ...", "--note", "stage 2: ...",
            "--trained-on", "the shapes"]
    assert run("export_checkpoint", lambda: script.main(script.get_args_parser().parse_args(argv))) == 0
    source, exported = read_checkpoint(ckpt), read_checkpoint(out)
    assert exported.extra["results"] == {"val/beam1": {"CIDEr": 1.5}}
    assert exported.extra["notes"] == ["stage 1: ...", "stage 2: ..."] and exported.extra["trained_on"] == "the shapes"
    assert exported.extra["command"] == source.extra["command"]  # the training command is kept
    floats = [k for k, v in source.state_dict.items() if v.is_floating_point()]
    assert floats and all(exported.state_dict[k].dtype == torch.float16 for k in floats)
    assert out.stat().st_size < ckpt.stat().st_size
