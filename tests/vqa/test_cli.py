"""The `vqa` console script, run as a user runs it (a subprocess) and in-process."""

import json
import subprocess
import sys

import pytest
from PIL import Image

import vqa.api
from vqa.cli import main

from ..shapes import VQA_QUESTIONS


def run_vqa(*args):
    return subprocess.run([sys.executable, "-m", "vqa.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_answers_and_draws_the_glimpses(trained_vqa, shapes_vqa, tmp_path):
    record = shapes_vqa.val.records[0]
    out = tmp_path / "att.png"
    r = run_vqa(record.path, "what color is the shape?", "--checkpoint", trained_vqa.checkpoint, "--top-k", "3",
                "--attention-map", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3
    answer, score = lines[0].split()
    assert answer == record.questions[0].answers[0] and 0.0 < float(score) <= 1.0
    with Image.open(out) as im:  # input + 2 glimpse panels
        assert im.size[0] > 3 * 200


def test_bad_image_is_one_line_and_exit_2(trained_vqa, bad_files):
    r = run_vqa(bad_files / "truncated.png", "what shape is it?", "--checkpoint", trained_vqa.checkpoint)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vqa: error: ") and "truncated" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("image, question, checkpoint, message", [
    ("missing.png", "what shape is it?", None, "no such file"),
    ("text.jpg", "what shape is it?", None, "not an image"),
    ("good.png", "  ", None, "the question is empty"),
    ("good.png", "what shape is it?", "text.jpg", "not a valid checkpoint"),
    ("good.png", "what shape is it?", "missing.safetensors", "no such checkpoint"),
])
def test_bad_input_in_process(trained_vqa, bad_files, capsys, image, question, checkpoint, message):
    checkpoint = bad_files / checkpoint if checkpoint else trained_vqa.checkpoint
    assert main([str(bad_files / image), question, "--checkpoint", str(checkpoint)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("vqa: error: ")
    assert message in captured.err


def test_json_choices_and_truncation_warning(trained_vqa, shapes_vqa, capsys):
    record = shapes_vqa.val.records[1]
    long_question = VQA_QUESTIONS[1][0] + " please answer quickly now"
    args = [str(record.path), long_question, "--checkpoint", str(trained_vqa.checkpoint), "--json",
            "--choices", "circle|square|triangle|hexagon"]
    assert main(args) == 0
    captured = capsys.readouterr()
    obj = json.loads(captured.out)
    assert obj["truncated"] and obj["image"] == str(record.path) and len(obj["answers"]) == 4
    assert obj["answers"][0]["answer"] == record.questions[1].answers[0]
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("vqa: warning: ") for w in warnings)
    assert "reads only the first" in captured.err and "'hexagon'" in captured.err
    assert "words the model does not know, read as <unk>: 'please'" in captured.err


def test_attention_map_without_attention_warns_and_answers(mul_checkpoint, shapes_vqa, tmp_path, capsys):
    """It used to exit 2 with no answers (the README's example, with the shipped mul model)."""
    args = [str(shapes_vqa.val.records[0].path), "what shape is it?", "--checkpoint", str(mul_checkpoint),
            "--attention-map", str(tmp_path / "att.png"), "--top-k", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("vqa: warning: --attention-map")
    assert "'mul' fusion, which has no attention" in captured.err
    assert "vqa_easy_vqa_attention.safetensors" in captured.err  # the shipped model that has attention
    assert len(captured.out.splitlines()) == 3
    assert not (tmp_path / "att.png").exists()


def test_unknown_words_warn(trained_vqa, shapes_vqa, capsys):
    """A question of only unknown words was answered with a near-zero score and no warning."""
    image = str(shapes_vqa.val.records[0].path)
    assert main([image, "zzyzx quux", "--checkpoint", str(trained_vqa.checkpoint)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("vqa: warning: the question has no words the model knows")
    assert "'zzyzx', 'quux'" in err and err.count("\n") == 1


def test_no_known_word_warns_on_stderr_in_json_and_in_the_report(trained_vqa, shapes_vqa, tmp_path, capsys):
    """`vqa IMG "???"` answered "no 1.0000" with no warning anywhere."""
    image = str(shapes_vqa.val.records[0].path)
    report = tmp_path / "r.html"
    assert main([image, "???", "--checkpoint", str(trained_vqa.checkpoint), "--json", "--html", str(report)]) == 0
    captured = capsys.readouterr()
    line = "the question has no words the model knows ('?'): the answer is a guess"
    assert captured.err == f"vqa: warning: {line}\n"
    assert json.loads(captured.out)["warnings"] == [line]
    assert json.dumps(line)[1:-1].replace("<", "\\u003c") in report.read_text()


def test_bad_arguments_are_one_line(trained_vqa, shapes_vqa, tmp_path, capsys):
    image = str(shapes_vqa.val.records[0].path)
    for flags, message in [(["--choices", " | "], "no answer choices given"),
                           (["--attention-map", str(tmp_path / "a.bmp")], "cannot write an attention map as .bmp"),
                           (["--checkpoint", str(tmp_path)], "a folder without a checkpoint")]:
        assert main([image, "what shape is it?", "--checkpoint", str(trained_vqa.checkpoint), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    with pytest.raises(SystemExit):
        main([image, "what shape is it?", "--top-k", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_checkpoint_folder_and_url(trained_vqa, shapes_vqa, capsys):
    """--checkpoint takes a training output folder; the image may be an http(s) URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    record = shapes_vqa.val.records[0]
    handler = functools.partial(Quiet, directory=str(record.path.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{record.path.name}"
        assert main([url, "what shape is it?", "--checkpoint", str(trained_vqa.checkpoint.parent), "--json"]) == 0
        by_url = json.loads(capsys.readouterr().out)
        assert main([str(record.path), "what shape is it?", "--checkpoint", str(trained_vqa.checkpoint), "--json"]) == 0
        by_path = json.loads(capsys.readouterr().out)
        assert by_url["answers"] == by_path["answers"]
        assert main([url + ".missing", "what shape is it?", "--checkpoint", str(trained_vqa.checkpoint)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "download failed (HTTP 404" in err
    finally:
        server.shutdown()
        server.server_close()


def test_default_checkpoint_missing_or_announced(trained_vqa, shapes_vqa, tmp_path, monkeypatch, capsys):
    image = str(shapes_vqa.val.records[0].path)
    monkeypatch.setattr(vqa.api, "DEFAULT_VQA_CHECKPOINT", tmp_path / "vqa_easy_vqa.safetensors")
    assert main([image, "what shape is it?"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no default checkpoint" in err and "--checkpoint" in err
    monkeypatch.setattr(vqa.api, "DEFAULT_VQA_CHECKPOINT", trained_vqa.checkpoint)
    assert main([image, "what shape is it?", "--top-k", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == f"vqa: using the default checkpoint {trained_vqa.checkpoint.name}, trained on test shapes"
    assert len(captured.out.splitlines()) == 1


@pytest.fixture
def mul_checkpoint(shapes_vqa, tmp_path):
    """An untrained mul-fusion model is enough to be refused an attention map."""
    from vqa.model import VQANet
    from vqa.training import VQATask

    from .conftest import tiny_train_config, tiny_vqa_config

    model = VQANet(tiny_vqa_config(len(shapes_vqa.words), len(shapes_vqa.answers), "mul"))
    path = tmp_path / "mul.safetensors"
    VQATask(model, shapes_vqa.words, shapes_vqa.answers, None, None, None, tiny_train_config()).save(path, {})
    return path


def test_html_report_shows_the_answers_and_each_glimpse(trained_vqa, shapes_vqa, browser, tmp_path):
    from selenium.webdriver.common.by import By

    record = shapes_vqa.val.records[0]
    out = tmp_path / "report.html"
    r = run_vqa(record.path, "what color is the shape?", "--checkpoint", trained_vqa.checkpoint, "--top-k", "3",
                "--html", out)
    assert r.returncode == 0, r.stderr
    printed = [line.split() for line in r.stdout.strip().splitlines()]
    browser.get(out.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    card = browser.find_element(By.CSS_SELECTOR, "section.card")
    assert card.find_element(By.CSS_SELECTOR, ".question").text == "Q: what color is the shape?"
    shown = [li.text.split() for li in card.find_elements(By.CSS_SELECTOR, ".answers li")]
    assert [a for a, _ in shown] == [a for a, _ in printed]
    assert [float(s) for _, s in shown] == pytest.approx([float(s) for _, s in printed], abs=1e-3)
    glimpses = trained_vqa.model.cfg.fusion.glimpses
    assert len(card.find_elements(By.CSS_SELECTOR, ".chip")) == glimpses
