"""scripts/train_vqa.py and scripts/evaluate_vqa.py, end to end on the shapes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vqa.api
from tests.conftest import SCRIPTS, load_script


def evaluate_in_process(capsys, *args) -> tuple[int, str, str]:
    script = load_script("evaluate_vqa")
    from captioning.core.commandline import run

    parsed = script.get_args_parser().parse_args([str(a) for a in args])
    code = run(script.PROG, lambda: script.main(parsed))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_with_a_model_then_score_its_results(trained_vqa, shapes_vqa, tmp_path, capsys):
    q, a, images = shapes_vqa.files["val"]
    results = tmp_path / "out" / "results.json"
    r = subprocess.run([sys.executable, str(SCRIPTS / "evaluate_vqa.py"), "--checkpoint", str(trained_vqa.checkpoint),
                        "--questions", str(q), "--annotations", str(a), "--images", str(images),
                        "--results-out", str(results), "--json", "--num-workers", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert set(scores) >= {"overall", "perAnswerType"} and set(scores["perAnswerType"]) == {"other", "yes/no"}
    best = max(row["val_accuracy"] for row in trained_vqa.history)
    assert scores["overall"] == pytest.approx(best, abs=0.01)  # best.safetensors, rounded as the official code
    written = json.loads(results.read_text())
    assert len(written) == shapes_vqa.val.num_questions and set(written[0]) == {"question_id", "answer"}
    # Scoring the written file gives the same numbers.
    code, out, err = evaluate_in_process(capsys, "--questions", q, "--annotations", a, "--results", results, "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == scores
    code, out, _ = evaluate_in_process(capsys, "--questions", q, "--annotations", a, "--results", results)
    assert code == 0 and out.startswith(f"overall accuracy: {scores['overall']:.2f}") and "yes/no" in out


def test_unreadable_images_are_refused_or_skipped(trained_vqa, shapes_vqa, tmp_path, capsys):
    """One unreadable image used to stop the whole evaluation midway."""
    q, a, images = shapes_vqa.files["val"]
    copy = tmp_path / "images"
    shutil.copytree(images, copy)
    record = shapes_vqa.val.records[2]
    bad = copy / record.path.name
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    common = ["--checkpoint", trained_vqa.checkpoint, "--questions", q, "--annotations", a, "--images", copy,
              "--json", "--num-workers", "0"]
    code, out, err = evaluate_in_process(capsys, *common)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"1 of {len(shapes_vqa.val.records)} images cannot be read" in err and str(bad) in err
    results = tmp_path / "results.json"
    code, out, err = evaluate_in_process(capsys, *common, "--skip-bad-images", "--results-out", results)
    assert code == 0, err
    assert f"skipped: {bad}" in err
    asked = shapes_vqa.val.num_questions - len(record.questions)
    assert json.loads(out)["num_questions"] == asked
    answered = {r["question_id"] for r in json.loads(results.read_text())}
    assert len(answered) == asked and not answered & {q.question_id for q in record.questions}


def test_evaluate_errors_are_one_line(shapes_vqa, tmp_path, monkeypatch, capsys):
    q, a, images = shapes_vqa.files["val"]
    monkeypatch.setattr(vqa.api, "DEFAULT_VQA_CHECKPOINT", tmp_path / "vqa_easy_vqa.safetensors")
    script = load_script("evaluate_vqa")  # VQAModel.from_pretrained finds the default: vqa.api's
    from captioning.core.commandline import run

    code = run(script.PROG, lambda: script.main(script.get_args_parser().parse_args(
        ["--questions", str(q), "--annotations", str(a), "--images", str(images)])))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no default checkpoint" in err and "--checkpoint" in err
    (tmp_path / "partial.json").write_text(json.dumps([{"question_id": 1000000, "answer": "red"}]))
    code, _, err = evaluate_in_process(capsys, "--questions", q, "--annotations", a, "--results", tmp_path / "partial.json")
    assert code == 2 and err.count("\n") == 1 and "not in the annotations" in err


def test_evaluate_protocol_flag(tmp_path, capsys):
    """--protocol picks the version of the official code; 2021 (today's) is the default."""
    humans = [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
              for i, a in enumerate(["Two"] * 3 + ["3"] * 7)]
    files = {"q.json": {"questions": [{"question_id": 1, "image_id": 1, "question": "How many?"}]},
             "a.json": {"annotations": [{"question_id": 1, "image_id": 1, "question_type": "how many",
                                         "answer_type": "number", "answers": humans}]},
             "r.json": [{"question_id": 1, "answer": "2"}]}
    for name, obj in files.items():
        (tmp_path / name).write_text(json.dumps(obj))
    args = ["--questions", tmp_path / "q.json", "--annotations", tmp_path / "a.json", "--results", tmp_path / "r.json"]
    scores = {}
    for extra in ([], ["--protocol", "2021"], ["--protocol", "2016"]):
        code, out, err = evaluate_in_process(capsys, *args, *extra, "--json")
        assert code == 0 and err == ""
        scores[tuple(extra)] = json.loads(out)
    # "Two" among the humans is "2" once normalised (2021) and stays "Two" in 2016.
    assert scores[()] == scores[("--protocol", "2021")]
    assert (scores[()]["overall"], scores[()]["protocol"]) == (90.0, "2021")
    assert (scores[("--protocol", "2016")]["overall"], scores[("--protocol", "2016")]["protocol"]) == (0.0, "2016")
    code, out, _ = evaluate_in_process(capsys, *args, "--protocol", "2016")
    assert code == 0 and out.startswith("overall accuracy: 0.00") and "2016" in out.splitlines()[0]
    with pytest.raises(SystemExit):  # argparse refuses other years
        load_script("evaluate_vqa").get_args_parser().parse_args(["--questions", "q", "--protocol", "2017"])


def test_train_script_reads_shards_by_image_id(shapes_vqa, tmp_path, capsys):
    """--shards: VQA records find their pixels by image id in shards written in another order
    (as COCO caption files order them); no JPEG is read, so the image folders may be empty."""
    from captioning.core.shards import write_shards

    script = load_script("train_vqa")
    shards = tmp_path / "shards"
    for split in ("train", "val"):
        write_shards(getattr(shapes_vqa, split).records[::-1], shards / split, 64, workers=1)
    empty = tmp_path / "no_images"
    empty.mkdir()
    tq, ta, _ = shapes_vqa.files["train"]
    vq, va, _ = shapes_vqa.files["val"]
    args = ["--train-questions", tq, "--train-annotations", ta, "--train-images", empty,
            "--val-questions", vq, "--val-annotations", va, "--val-images", empty, "--shards", shards,
            "--image-size", "64", "--word-dim", "8", "--rnn-dim", "16", "--fusion", "mul", "--classifier-dim", "16",
            "--batch-size", "9", "--num-workers", "0", "--progress", "false", "--epochs", "1", "--out", tmp_path / "run"]
    assert script.main(script.get_args_parser().parse_args([str(a) for a in args]), command=["train_vqa.py"]) == 0
    assert (tmp_path / "run" / "last.safetensors").exists()
    # Shards of other images are refused before anything is trained.
    from captioning.core.commandline import run

    wrong = [str({tq: vq, ta: va}.get(a, a)) for a in args]  # the val questions against the train shards
    code = run("train_vqa", lambda: script.main(script.get_args_parser().parse_args(wrong), command=["train_vqa.py"]))
    err = capsys.readouterr().err
    assert code == 2 and "images are not in the shards" in err and "Traceback" not in err


def test_prepare_coco_shards_a_vqa_questions_file(shapes_vqa, tmp_path):
    from captioning.core.shards import ShardedImages

    tq, _, ti = shapes_vqa.files["train"]
    vq, _, vi = shapes_vqa.files["val"]
    r = subprocess.run([sys.executable, str(SCRIPTS / "prepare_coco.py"), "--vqa-questions", tq, "--images", ti,
                        "--val-vqa-questions", vq, "--val-images", vi, "--out", tmp_path, "--size", "32",
                        "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for split in ("train", "val"):
        shards = ShardedImages(tmp_path / split)
        assert shards.size == 32 and shards.image_ids == [rec.image_id for rec in getattr(shapes_vqa, split).records]
    r = subprocess.run([sys.executable, str(SCRIPTS / "prepare_coco.py"), "--vqa-questions", tq, "--images", ti,
                        "--captions", tq, "--out", tmp_path / "x"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "not both" in r.stderr and "Traceback" not in r.stderr


def test_train_script_has_no_captioner_flags():
    """--compile and --static-shapes shape the captioner's decoder step: CaptionTrainConfig's,
    not the shared TrainConfig's, so train_vqa.py does not offer them (it used to, and crashed)."""
    assert "--compile" not in load_script("train_vqa").get_args_parser().format_help()
    caption_help = load_script("train_caption").get_args_parser().format_help()
    assert "--compile" in caption_help and "--static-shapes" in caption_help


def test_train_script_trains_and_resumes(shapes_vqa, tmp_path, capsys, monkeypatch):
    import captioning.core.checkpoint as checkpoint

    script = load_script("train_vqa")
    tq, ta, ti = shapes_vqa.files["train"]
    vq, va, vi = shapes_vqa.files["val"]
    out = tmp_path / "run"
    common = ["--train-questions", tq, "--train-annotations", ta, "--train-images", ti,
              "--val-questions", vq, "--val-annotations", va, "--val-images", vi, "--out", out,
              "--image-size", "64", "--word-dim", "8", "--rnn", "gru", "--rnn-dim", "16", "--fusion", "attention",
              "--glimpses", "1", "--attention-dim", "8", "--classifier-dim", "16", "--top-answers", "5",
              "--batch-size", "9", "--num-workers", "0", "--progress", "false", "--trained-on", "shapes"]
    first = [str(a) for a in common + ["--epochs", "1"]]
    assert script.main(script.get_args_parser().parse_args(first), command=["train_vqa.py", *first]) == 0
    # A run recorded before compile moved to the captioner's config still resumes.
    saved = checkpoint.read_checkpoint(out / "last.safetensors")
    saved.extra["command"] += ["--compile", "false"]
    saved.extra["train_config"].update(compile=False, static_shapes=False)
    checkpoint.write_checkpoint(out / "last.safetensors", saved)
    opened = []
    monkeypatch.setattr(checkpoint, "safe_open", lambda path, *a, _open=checkpoint.safe_open, **k:
                        opened.append(path) or _open(path, *a, **k))
    again = [str(a) for a in common + ["--epochs", "2", "--resume", out / "last.safetensors"]]
    assert script.main(script.get_args_parser().parse_args(again), command=["train_vqa.py", *again]) == 0
    assert opened == [str(out / "last.safetensors")]  # --resume read once: command, vocabularies, config, weights
    model = vqa.api.VQAModel.from_pretrained(out / "last.safetensors")
    assert len(model.answer_vocab) == 5 and model.model.cfg.fusion.glimpses == 1 and model.model.cfg.question.rnn == "gru"
    assert model.extra["trained_on"] == "shapes" and model.extra["epoch"] == 2
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert "5 answers; attention fusion" in capsys.readouterr().err


def test_train_script_augments_pixels_but_not_cached_features(shapes_vqa, tmp_path):
    """--augment with --cache-features: the cached views were augmented when cached, and the
    training steps pass the (B, P, C) features through (this once crashed in the VQA task,
    which augmented whatever the batch held)."""
    script = load_script("train_vqa")
    tq, ta, ti = shapes_vqa.files["train"]
    out = tmp_path / "run"
    args = script.get_args_parser().parse_args([str(a) for a in [
        "--train-questions", tq, "--train-annotations", ta, "--train-images", ti, "--out", out,
        "--image-size", "64", "--word-dim", "8", "--rnn-dim", "16", "--fusion", "mul", "--fusion-dim", "8",
        "--classifier-dim", "16", "--top-answers", "5", "--batch-size", "9", "--num-workers", "0",
        "--progress", "false", "--epochs", "1", "--augment", "0.5", "--cache-features", tmp_path / "cache",
        "--cache-views", "2"]])
    assert script.main(args, command=["train_vqa.py"]) == 0
    assert (out / "last.safetensors").exists() and any((tmp_path / "cache").iterdir())


def test_evaluate_writes_results_in_the_run_folder_never_the_current_one(trained_vqa, shapes_vqa, tmp_path):
    """evaluate_vqa.py used to write vqa_OpenEnded_..._results.json into the current folder
    (the repository itself when run from there)."""
    q, a, images = shapes_vqa.files["val"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = subprocess.run([sys.executable, str(SCRIPTS / "evaluate_vqa.py"), "--checkpoint", str(trained_vqa.checkpoint),
                        "--questions", str(q), "--annotations", str(a), "--images", str(images), "--json",
                        "--num-workers", "0"], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert list(cwd.iterdir()) == []
    written = list(trained_vqa.checkpoint.parent.glob("vqa_OpenEnded_mscoco_*_best_results.json"))
    assert len(written) == 1 and f"wrote {shapes_vqa.val.num_questions} answers to {written[0]}" in r.stderr
    script = load_script("evaluate_vqa")
    from captioning.core.checkpoint import CHECKPOINT_DIR

    assert script.results_path(None, CHECKPOINT_DIR / "vqa_easy_vqa.safetensors", "test") is None  # shipped: only if asked
    assert script.results_path("x/r.json", CHECKPOINT_DIR / "vqa_easy_vqa.safetensors", "test") == Path("x/r.json")


def test_resume_with_cached_features_and_an_encoder_weights_file_reuses_the_cache(shapes_vqa, tmp_path):
    """train_vqa.py --resume R --cache-features C --encoder-weights FILE cached features from a
    randomly initialised CNN (the checkpoint's CNN was loaded only later, in fit); the
    captioning script had been fixed, VQA had not. Both now go through
    captioning.core.checkpoint.resume_model: the resumed run finds the first run's cache."""
    import torch
    from safetensors.torch import save_file

    from captioning.core.encoders import build_encoder

    weights = tmp_path / "lite0.safetensors"
    state = build_encoder("efficientnet_lite0", "default").state_dict()
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(weights))
    script = load_script("train_vqa")
    tq, ta, ti = shapes_vqa.files["train"]
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--train-questions", tq, "--train-annotations", ta, "--train-images", ti, "--out", out,
              "--image-size", "64", "--word-dim", "8", "--rnn-dim", "16", "--fusion", "mul", "--fusion-dim", "8",
              "--classifier-dim", "16", "--top-answers", "5", "--batch-size", "9", "--num-workers", "0",
              "--progress", "false", "--encoder-weights", weights, "--cache-features", cache]
    first = [str(a) for a in common + ["--epochs", "1"]]
    assert script.main(script.get_args_parser().parse_args(first), command=["train_vqa.py", *first]) == 0
    cached = sorted(p.name for p in cache.iterdir())
    assert cached
    again = [str(a) for a in common + ["--epochs", "2", "--resume", out]]
    assert script.main(script.get_args_parser().parse_args(again), command=["train_vqa.py", *again]) == 0
    assert sorted(p.name for p in cache.iterdir()) == cached  # the same CNN, so the same cache
    resumed = vqa.api.VQAModel.from_pretrained(out / "last.safetensors")
    assert resumed.extra["epoch"] == 2
    for k, v in resumed.model.encoder.state_dict().items():  # the file's CNN, frozen throughout
        if k in state and v.is_floating_point():
            torch.testing.assert_close(v, state[k].to(v.dtype), msg=k)
