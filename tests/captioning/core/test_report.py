"""The HTML attention explorer: its data encoding, and the page itself in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from captioning.core.report import (
    annotate,
    caption_item,
    encode_maps,
    hypotheses,
    image_data_uri,
    render_page,
    vqa_item,
    write_report,
)
from tests.browser import console_errors, drawn, pixels

GRID = (7, 7)


def picture(size=(160, 120)) -> Image.Image:
    """A colour gradient: every overlay position changes different pixels."""
    x = np.linspace(0, 255, size[0])[None, :, None]
    y = np.linspace(0, 255, size[1])[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)), np.broadcast_to(y, (size[1], size[0], 1)),
                          np.full((size[1], size[0], 1), 128.0)], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


def peaked(positions) -> np.ndarray:
    """(T, h, w) attention, map t a soft peak at positions[t], each summing to 1."""
    yy, xx = np.mgrid[: GRID[0], : GRID[1]]
    maps = np.stack([np.exp(-((yy - r) ** 2 + (xx - c) ** 2)) for r, c in positions]).astype(np.float32)
    return maps / maps.sum(axis=(1, 2), keepdims=True)


def hyp(caption, positions, score):
    return SimpleNamespace(caption=caption, tokens=caption.split(), score=score, attention=peaked(positions))


def beam_result():
    """A caption result as the beam search returns it, with two alternatives, one a repeat of the best."""
    best = hyp("a red circle", [(0, 0), (6, 6), (3, 3)], -0.2)
    other = hyp("a big blue square", [(0, 6), (6, 0), (3, 0), (0, 3)], -0.9)
    best.alternatives = [hyp("a red circle", [(1, 1)] * 3, -0.2), other]
    return best, other


def open_page(browser, tmp_path, items, name="report.html"):
    path = tmp_path / name
    write_report(path, items)
    browser.get(path.as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "1"
    return path


def cards(browser):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, "section.card")


def chips(card):
    from selenium.webdriver.common.by import By

    return [c.find_element(By.CSS_SELECTOR, ".w").text for c in card.find_elements(By.CSS_SELECTOR, ".chip")]


def hover(browser, element):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element(element).perform()


def test_maps_travel_as_bytes_that_keep_each_peak():
    att = peaked([(0, 0), (6, 2), (3, 5)])
    enc = encode_maps(att)
    grid = np.frombuffer(base64.b64decode(enc["maps"]), np.uint8).reshape(3, *GRID)
    assert enc["grid"] == list(GRID) and len(enc["maps"]) < 4 * 3 * 49 / 3 + 4
    for t in range(3):
        assert np.unravel_index(grid[t].argmax(), GRID) == np.unravel_index(att[t].argmax(), GRID)
        assert grid[t].max() == 255 and enc["peaks"][t] == pytest.approx(att[t].max(), abs=1e-4)
    with pytest.raises(ValueError):
        encode_maps(att[0])


def test_images_are_shrunk_data_uris():
    uri, w, h = image_data_uri(picture((1200, 600)))
    assert (w, h) == (512, 256)
    mime, data = re.match(r"data:(image/\w+);base64,(.*)", uri).groups()
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        assert im.size == (512, 256) and im.get_format_mimetype() == mime
    assert image_data_uri(picture((64, 48)))[1:] == (64, 48)  # small ones keep their size


def test_hypotheses_are_the_best_then_distinct_alternatives():
    best, other = beam_result()
    assert [h.caption for h in hypotheses(best)] == ["a red circle", "a big blue square"]
    del best.alternatives  # a result from a search that keeps none
    assert hypotheses(best) == [best]


def test_item_checks_its_probabilities():
    best, _ = beam_result()
    with pytest.raises(ValueError, match="2 probabilities for 3 words"):
        caption_item(picture(), "x", [best], [[0.5, 0.5]])


def test_the_page_cannot_be_closed_by_a_file_name():
    best, _ = beam_result()
    page = render_page([caption_item(picture(), "</script><script>alert(1)</script>", [best])])
    assert page.count("</script>") == 2  # the data's and the code's, nothing from the name
    data = page.split('type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["items"][0]["name"] == "</script><script>alert(1)</script>"


def test_words_hover_beams_and_keys_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    best, other = beam_result()
    hyps = hypotheses(best)
    probs = [[0.9, 0.6, 0.3], [0.5, 0.4, 0.3, 0.2]]
    open_page(browser, tmp_path, [caption_item(picture(), "shapes.png", hyps, probs)])
    assert console_errors(browser) == []
    card = cards(browser)[0]
    assert chips(card) == best.tokens
    assert [c.text for c in card.find_elements(By.CSS_SELECTOR, ".chip .p")] == ["90%", "60%", "30%"]

    canvas = drawn(browser, card.find_element(By.CSS_SELECTOR, "canvas"))
    words = card.find_elements(By.CSS_SELECTOR, ".chip")
    plain = pixels(canvas)
    hover(browser, words[0])
    first = pixels(canvas)
    hover(browser, words[1])
    second = pixels(canvas)
    # Word 0 looks top-left, word 1 bottom-right: different overlays, both unlike the bare image.
    assert np.abs(first.astype(int) - second).mean() > 5
    assert np.abs(first.astype(int) - plain).mean() > 5
    h, w = first.shape[:2]
    corner = lambda a, rows, cols: a[rows, cols].astype(float).mean()  # noqa: E731
    tl, br = (slice(0, h // 4), slice(0, w // 4)), (slice(3 * h // 4, h), slice(3 * w // 4, w))
    # Where a word looks the image keeps its brightness; elsewhere it is dimmed.
    assert corner(first, *tl) / corner(plain, *tl) > corner(first, *br) / corner(plain, *br)
    assert corner(second, *br) / corner(plain, *br) > corner(second, *tl) / corner(plain, *tl)
    hover(browser, card.find_element(By.CSS_SELECTOR, "h2"))
    assert np.array_equal(pixels(canvas), plain)  # no word selected: the image alone

    # Click pins a word; the arrow keys move along; Esc shows the image alone.
    words[0].click()
    words[0].send_keys(Keys.ARROW_RIGHT)
    assert canvas.get_attribute("data-word") == "1"
    assert browser.switch_to.active_element == words[1]
    words[1].send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    assert canvas.get_attribute("data-word") == "2"  # wraps around
    words[2].send_keys(Keys.ESCAPE)
    assert canvas.get_attribute("data-word") == ""

    # The second beam hypothesis: its words, with their probabilities and maps.
    beams = card.find_elements(By.CSS_SELECTOR, ".hyp")
    assert [b.find_element(By.CSS_SELECTOR, ".text").text for b in beams] == ["a red circle", "a big blue square"]
    beams[1].click()
    assert chips(card) == other.tokens
    assert beams[1].get_attribute("aria-checked") == "true"
    hover(browser, card.find_elements(By.CSS_SELECTOR, ".chip")[0])  # top-right, unlike any word of the best
    assert np.abs(pixels(canvas).astype(int) - first).mean() > 5
    assert console_errors(browser) == []


def test_colour_map_and_opacity_slider_change_the_overlay(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    best, _ = beam_result()
    open_page(browser, tmp_path, [caption_item(picture(), "shapes.png", [best])])
    card = cards(browser)[0]
    canvas = drawn(browser, card.find_element(By.CSS_SELECTOR, "canvas"))
    plain = pixels(canvas)
    card.find_elements(By.CSS_SELECTOR, ".chip")[2].click()
    inferno = pixels(canvas)
    Select(browser.find_element(By.ID, "cmap")).select_by_visible_text("viridis")
    viridis = pixels(canvas)
    assert np.abs(inferno.astype(int) - viridis).mean() > 1
    browser.execute_script("const s = document.getElementById('strength'); s.value = 0;"
                           "s.dispatchEvent(new Event('input'));")
    assert np.array_equal(pixels(canvas), plain)  # opacity 0: the picture alone, word still chosen
    assert canvas.get_attribute("data-word") == "2"
    assert console_errors(browser) == []


def test_vqa_card_shows_question_answers_and_glimpses(browser, tmp_path):
    from selenium.webdriver.common.by import By

    answers = [{"answer": "red", "score": 0.91}, {"answer": "blue", "score": 0.07}, {"answer": "green", "score": 0.01}]
    items = [vqa_item(picture(), "shape.png", "what color is it?", answers, peaked([(0, 0), (6, 6)])),
             vqa_item(picture(), "shape.png", "is it round?", [{"answer": "yes", "score": 0.8}], None)]
    open_page(browser, tmp_path, items)
    assert console_errors(browser) == []
    with_att, without = cards(browser)
    assert with_att.find_element(By.CSS_SELECTOR, ".question").text == "Q: what color is it?"
    rows = [li.text.split() for li in with_att.find_elements(By.CSS_SELECTOR, ".answers li")]
    assert rows == [["red", "0.910"], ["blue", "0.070"], ["green", "0.010"]]
    widths = [b.size["width"] for b in with_att.find_elements(By.CSS_SELECTOR, ".answers .bar i")]
    assert widths[0] > widths[1] > widths[2] >= 0
    assert chips(with_att) == ["glimpse 1", "glimpse 2"]
    canvas = drawn(browser, with_att.find_element(By.CSS_SELECTOR, "canvas"))
    plain = pixels(canvas)
    hover(browser, with_att.find_elements(By.CSS_SELECTOR, ".chip")[1])
    assert np.abs(pixels(canvas).astype(int) - plain).mean() > 5
    assert chips(without) == [] and "no attention map" in without.text


def test_fifty_images_are_built_as_they_scroll_into_view(browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    best, _ = beam_result()
    item = caption_item(picture((512, 384)), "photo.png", [best], [[0.5, 0.5, 0.5]])
    items = [{**item, "name": f"photo {i}.png"} for i in range(50)]
    path = open_page(browser, tmp_path, items)
    assert path.stat().st_size < 50 * (len(item["image"]) + 2000)  # the maps add little to the pictures
    sections = cards(browser)
    assert len(sections) == 50
    built = lambda: [s for s in cards(browser) if "pending" not in s.get_attribute("class")]  # noqa: E731
    assert 0 < len(built()) < 10
    browser.execute_script("arguments[0].scrollIntoView()", sections[-1])
    last = sections[-1]
    WebDriverWait(browser, 10).until(lambda _: "pending" not in last.get_attribute("class"))  # built asynchronously
    assert chips(last) == best.tokens
    assert console_errors(browser) == []


def test_caption_cli_writes_a_report_of_every_good_image(trained, bad_files, browser, tmp_path):
    from selenium.webdriver.common.by import By

    ckpt, _, records, *_ = trained
    out = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "captioning.cli", records[0].path, bad_files / "text.jpg",
                        records[1].path, "--checkpoint", ckpt, "--beam-size", "3", "--html", out],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "text.jpg" in r.stderr  # the bad image is said, the good ones reported
    captions = [line.split(": ", 1)[1] for line in r.stdout.strip().splitlines()]
    browser.get(out.as_uri())
    assert console_errors(browser) == []
    shown = cards(browser)
    assert [c.find_element(By.CSS_SELECTOR, "h2").text for c in shown] == [str(records[0].path), str(records[1].path)]
    for card, caption in zip(shown, captions):
        assert chips(card) == caption.split()
        probs = [float(p.text.rstrip("%").lstrip("<")) for p in card.find_elements(By.CSS_SELECTOR, ".chip .p")]
        assert len(probs) == len(caption.split()) and all(0 < p <= 100 for p in probs)


def test_annotated_boxes_toggle_over_the_map_and_training_data_is_shown(browser, tmp_path):
    from selenium.webdriver.common.by import By

    best, _ = beam_result()
    item = annotate(caption_item(picture(), "scene.png", [best]), [("red circle", [16, 12, 48, 36])], (160, 120),
                    trained_on="emoji scenes (test)")
    assert item["boxes"] == [{"label": "red circle", "x": 0.1, "y": 0.1, "w": 0.3, "h": 0.3}]
    plain = caption_item(picture(), "other.png", [best])
    assert annotate(dict(plain)) == plain  # nothing to add: unchanged
    with pytest.raises(ValueError):
        annotate(dict(plain), [("x", [0, 0, 1, 1])])
    open_page(browser, tmp_path, [item, plain])
    assert console_errors(browser) == []
    boxed, other = cards(browser)
    assert boxed.find_element(By.CSS_SELECTOR, ".trained-on").text == "model trained on: emoji scenes (test)"
    assert other.find_elements(By.CSS_SELECTOR, ".trained-on, .boxes-toggle") == []
    canvas = drawn(browser, boxed.find_element(By.CSS_SELECTOR, "canvas"))
    assert canvas.get_attribute("data-boxes") == "1"
    with_boxes = pixels(canvas).astype(int)
    boxed.find_element(By.CSS_SELECTOR, ".boxes-toggle input").click()
    assert canvas.get_attribute("data-boxes") == "0"
    without = pixels(canvas).astype(int)
    h, w = without.shape[:2]
    diff = np.abs(with_boxes - without).sum(axis=2) > 30  # (H, W) pixels the boxes changed
    assert diff.any()
    ys, xs = np.nonzero(diff)
    # the outline lies on the box's edges: 10% .. 40% of the picture each way (label inside it)
    assert xs.min() >= 0.08 * w and xs.max() <= 0.42 * w and ys.min() >= 0.08 * h and ys.max() <= 0.42 * h
    hover(browser, boxed.find_elements(By.CSS_SELECTOR, ".chip")[1])  # a word's map: boxes stay off
    assert canvas.get_attribute("data-boxes") == "0"


def test_hard_attentions_chosen_cell_is_outlined_on_the_words_map_in_chromium(browser, tmp_path):
    """A hypothesis with ``cells`` (hard attention, argmax decoding): the shown word's cell is
    outlined over its map, and only there; a hypothesis without them draws the map alone."""
    from selenium.webdriver.common.by import By

    best, _ = beam_result()
    marked = SimpleNamespace(**{**vars(best), "alternatives": [], "cells": [(0, 0), (6, 6), (3, 3)]})
    item = caption_item(picture(), "hard.png", [marked])
    assert item["hypotheses"][0]["cells"] == [[0, 0], [6, 6], [3, 3]]
    assert "cells" not in caption_item(picture(), "soft.png", [best])["hypotheses"][0]
    shown = []
    for k, page in enumerate([item, caption_item(picture(), "hard.png", [best])]):  # one page each: the same layout
        open_page(browser, tmp_path, [page], name=f"page{k}.html")
        assert console_errors(browser) == []
        card = cards(browser)[0]
        canvas = drawn(browser, card.find_element(By.CSS_SELECTOR, "canvas"))
        hover(browser, card.find_elements(By.CSS_SELECTOR, ".chip")[2])  # "circle": cell (3, 3)
        shown.append((canvas.get_attribute("data-cell"), pixels(canvas).astype(int)))
    (hard_cell, hard), (soft_cell, soft) = shown
    assert (hard_cell, soft_cell) == ("3,3", "")
    ys, xs = np.nonzero(np.abs(hard - soft).sum(axis=2) > 30)  # (H, W) pixels the outline changed
    h, w = hard.shape[:2]
    cell_h, cell_w = h / GRID[0], w / GRID[1]
    assert len(xs) and xs.min() >= 3 * cell_w - 3 and xs.max() <= 4 * cell_w + 3
    assert ys.min() >= 3 * cell_h - 3 and ys.max() <= 4 * cell_h + 3
