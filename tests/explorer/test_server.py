"""``explore``, the local web app: a real server on the shipped checkpoints, driven over HTTP
and from headless Chromium."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pytest

from captioning.core.images import read_image
from explorer.server import get_parser, main, make_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FACE = EXAMPLES / "emoji_google_grinning_face.png"
SHAPE = EXAMPLES / "easy_vqa_test_0.png"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    srv = make_server(get_parser().parse_args(["--port", "0", "--max-upload-mb", "1", "--precision", "fp32"]), folder)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.folder = folder
    yield srv
    srv.shutdown()
    srv.server_close()


def post(server, path, data: bytes, headers=None):
    """(status, parsed JSON body) of a POST."""
    request = urllib.request.Request(server.url + path, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def caption_of(server, path: Path, beam=3):
    """What the server's own captioner says of ``path`` (loaded by the requests before)."""
    return server.models._captioner(read_image(path), beam_size=beam).caption


def test_page_upload_caption_refusal_and_questions_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(server.url)
    assert browser.execute_script("return document.body.dataset.ready") == "1"
    pick = browser.find_element(By.ID, "pick")
    status = browser.find_element(By.ID, "status")

    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    pick.send_keys(str(text))
    wait.until(lambda d: status.find_elements(By.CSS_SELECTOR, ".error"))
    assert status.text == "notes.txt: not an image PIL can read"
    assert browser.find_elements(By.CSS_SELECTOR, "section.card") == []

    pick.send_keys(str(FACE))  # the next upload still works
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section.card .chip"))
    card = browser.find_element(By.CSS_SELECTOR, "section.card")
    words = [c.find_element(By.CSS_SELECTOR, ".w").text for c in card.find_elements(By.CSS_SELECTOR, ".chip")]
    caption = caption_of(server, FACE)
    assert words == caption.split() and status.text == f"{FACE.name}: {caption}"
    assert card.find_element(By.CSS_SELECTOR, "h2").text == FACE.name

    form = card.find_element(By.CSS_SELECTOR, "form.ask")
    form.find_element(By.NAME, "question").send_keys("what color is the face?")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section.card[data-kind=vqa] .answers li"))
    answers = [li.text.split()[0] for li in browser.find_elements(By.CSS_SELECTOR, "section.card[data-kind=vqa] .answers li")]
    expected = server.models._vqa(read_image(FACE), "what color is the face?", top_k=5)
    assert answers == [a["answer"] for a in expected]
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("415" in e for e in errors), errors  # Chromium logs the refused upload's status; nothing else


def test_page_names_the_models_and_shows_the_warnings_the_cli_prints(server, browser):
    """The page never said the models are the offline demo ones, and the CLI's warnings
    ("???": no word the model knows) never reached it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from vqa.api import VQAModel

    wait = WebDriverWait(browser, 120)
    browser.get(server.url)
    models = browser.find_element(By.ID, "models").text.splitlines()
    assert len(models) == 2
    assert models[0].startswith("captioner: caption_emoji.safetensors, trained on emoji names (Google Noto")
    assert "words of its vocabulary only" in models[0]
    assert models[1].startswith("question answering: vqa_easy_vqa.safetensors, trained on easy-VQA train split")
    assert "one of 13 answers (yes, no, rectangle, circle, triangle," in models[1] and "color" in models[1]

    browser.find_element(By.ID, "pick").send_keys(str(SHAPE))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "section.card form.ask"))
    shipped = VQAModel.from_pretrained(precision="fp32")
    for question in ["???", "what colour is the hexagon?", "what shape is in the image?"]:
        form = browser.find_element(By.CSS_SELECTOR, "section.card[data-kind=caption] form.ask")
        box = form.find_element(By.NAME, "question")
        box.clear()
        box.send_keys(question)
        before = len(browser.find_elements(By.CSS_SELECTOR, "section.card[data-kind=vqa]"))
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait.until(lambda d, before=before: len(d.find_elements(By.CSS_SELECTOR, "section.card[data-kind=vqa] .answers")) > before)
        card = browser.find_element(By.CSS_SELECTOR, "section.card[data-kind=vqa]")  # the newest, under the image
        shown = [li.text for li in card.find_elements(By.CSS_SELECTOR, ".warnings li")]
        with pytest.warns() if question != "what shape is in the image?" else nullcontext():
            expected = shipped.predict(read_image(SHAPE), question).warnings
        assert shown == expected, question
    assert shown == [] and expected == []  # a question it knows: no caveat


def test_refusals_are_4xx_with_a_message_and_the_server_keeps_serving(server):
    status, body = post(server, "api/caption?name=big.png", b"\0" * (2 * 2**20))
    assert status == 413 and body["error"] == "big.png: the file is 2.0 MB, over the limit of 1.0 MB"
    status, body = post(server, "api/caption?name=face.png&beam=0", FACE.read_bytes())
    assert status == 400 and "beam size" in body["error"]
    status, body = post(server, "api/vqa", json.dumps({"image_id": "0123", "question": "what?"}).encode())
    assert status == 404 and "upload it again" in body["error"]
    status, body = post(server, "api/vqa", b"{not json")
    assert status == 400
    status, body = post(server, "api/caption?name=face.png", FACE.read_bytes())
    assert status == 200
    status, empty = post(server, "api/vqa", json.dumps({"image_id": body["item"]["image_id"], "question": " "}).encode())
    assert status == 400 and empty["error"] == "the question is empty"
    # A page on another site that rebinds its name to 127.0.0.1 is refused.
    status, body = post(server, "api/caption?name=face.png", FACE.read_bytes(), {"Host": "evil.example:80"})
    assert status == 403
    with urllib.request.urlopen(server.url, timeout=30) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")


def test_concurrent_uploads_get_the_same_answers_and_files_stay_in_the_folder(server):
    images = [FACE, SHAPE] * 3
    with ThreadPoolExecutor(len(images)) as pool:
        replies = list(pool.map(lambda p: post(server, f"api/caption?name={p.name}&beam=2", p.read_bytes()), images))
    assert all(status == 200 for status, _ in replies)
    by_image = {}
    for path, (_, body) in zip(images, replies):
        by_image.setdefault(path, set()).add(body["item"]["hypotheses"][0]["caption"])
    assert by_image == {FACE: {caption_of(server, FACE, 2)}, SHAPE: {caption_of(server, SHAPE, 2)}}
    ids = {body["item"]["image_id"] for _, body in replies}
    assert len(ids) == len(images)
    kept = {p.name for p in server.folder.iterdir()}
    assert ids <= kept  # every upload is in the temporary folder, by its id


def test_old_uploads_are_deleted(server):
    keep, server.uploads.keep = server.uploads.keep, 2
    try:
        ids = [post(server, "api/caption?name=face.png&beam=1", FACE.read_bytes())[1]["item"]["image_id"] for _ in range(3)]
        assert not (server.folder / ids[0]).exists() and all((server.folder / i).exists() for i in ids[1:])
        status, body = post(server, "api/vqa", json.dumps({"image_id": ids[0], "question": "what shape?"}).encode())
        assert status == 404
    finally:
        server.uploads.keep = keep


def test_missing_checkpoint_and_busy_port_are_one_line_errors(server, tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert capsys.readouterr().err.strip() == f"explore: error: {tmp_path / 'nope.safetensors'}: no such checkpoint"
    # A file that is not a checkpoint, or one of the other task, used to start serving and then
    # fail every upload with HTTP 400: refused at start now.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    vqa_file = Path(__file__).resolve().parents[2] / "checkpoints" / "vqa_easy_vqa.safetensors"
    for flags, message in [(["--checkpoint", str(bad)], f"{bad}: not a valid checkpoint"),
                           (["--vqa-checkpoint", str(bad)], f"{bad}: not a valid checkpoint"),
                           (["--checkpoint", str(vqa_file)], "is a 'vqa' checkpoint, expected a 'caption' one"),
                           (["--port", "99999"], "--port 99999: a port is a number from 0 to 65535"),
                           (["--port", "-1"], "--port -1: a port is a number from 0 to 65535")]:
        assert main(["--port", "0", *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("explore: error: ") and message in err, err
    assert main(["--port", str(server.server_address[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_instances_give_an_annotated_upload_its_boxes_and_the_model_its_training_data(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    instances = tmp_path / "instances.json"
    instances.write_text(json.dumps({
        "images": [{"id": 5, "file_name": "emoji_google_grinning_face.png", "width": 64, "height": 64}],
        "annotations": [{"id": 50, "image_id": 5, "category_id": 1, "bbox": [16, 8, 32, 48], "area": 1536, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "grinning face"}]}))
    srv = make_server(get_parser().parse_args(["--port", "0", "--vqa-checkpoint", "none", "--precision", "fp32",
                                               "--instances", str(instances)]), folder)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = post(srv, "api/caption?beam=1&name=emoji_google_grinning_face.png", FACE.read_bytes())
        assert status == 200
        assert body["item"]["boxes"] == [{"label": "grinning face", "x": 0.25, "y": 0.125, "w": 0.5, "h": 0.75}]
        assert "emoji" in body["item"]["trained_on"]  # the shipped checkpoint's metadata
        status, body = post(srv, "api/caption?beam=1&name=other.png", FACE.read_bytes())
        assert status == 200 and "boxes" not in body["item"]
    finally:
        srv.shutdown()
        srv.server_close()
