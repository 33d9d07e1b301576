"""Screenshots of the attention explorer for the README, with the shipped models.

    python scripts/screenshot_explorer.py      # writes examples/explorer_caption.png, examples/explorer_vqa.png

Writes the HTML reports that ``caption --html`` and ``vqa --html`` write, opens them in
headless Chromium (``bench.browser``, the tests' launcher too; ``chromium`` and
``chromium-driver`` installed) and photographs one card of each, a word
of the caption chosen.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

from bench.browser import drawn, quit_chromium, start_chromium
from captioning.core.fileio import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=str(ROOT / "examples/emoji_google_grinning_face.png"))
    p.add_argument("--vqa-image", default=str(ROOT / "examples/easy_vqa_test_0.png"))
    p.add_argument("--question", default="what is the color of the shape?")
    p.add_argument("--word", type=int, default=0, help="which word of the caption to show (default 0, the first)")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "examples/explorer_caption.png"))
    p.add_argument("--vqa-out", default=str(ROOT / "examples/explorer_vqa.png"))
    return p


def reports(args, folder: Path) -> tuple[Path, Path]:
    from captioning.api import Captioner
    from captioning.core.images import read_image
    from captioning.core.report import vqa_item, write_report
    from vqa.api import VQAModel

    captioner = Captioner.from_pretrained(precision="fp32")
    image = read_image(args.image)
    result = captioner(image, beam_size=args.beam_size)
    caption = folder / "caption.html"
    write_report(caption, [captioner.report_item(image, result, Path(args.image).name)],
                 "Captions: where the model looked")
    vqa = VQAModel.from_pretrained(precision="fp32")
    image = read_image(args.vqa_image)
    prediction = vqa.predict(image, args.question, top_k=5)
    answers = folder / "vqa.html"
    write_report(answers, [vqa_item(image, Path(args.vqa_image).name, prediction.question, prediction.answers,
                                    prediction.attention)], "Visual question answering: where the model looked")
    return caption, answers


def photograph(driver, page: Path, out: Path, word: int | None) -> None:
    from selenium.webdriver.common.by import By

    driver.get(page.as_uri())
    card = driver.find_element(By.CSS_SELECTOR, "section.card")
    drawn(driver, card.find_element(By.CSS_SELECTOR, "canvas"))
    chips = card.find_elements(By.CSS_SELECTOR, ".chip")
    if word is not None and chips:
        chips[min(word, len(chips) - 1)].click()
    with Image.open(io.BytesIO(card.screenshot_as_png)) as im, atomic_path(out) as tmp:
        im.convert("RGB").save(tmp, format="PNG", optimize=True)
    print(out)


def main() -> int:
    args = get_args_parser().parse_args()
    with tempfile.TemporaryDirectory() as folder:
        caption, answers = reports(args, Path(folder))
        driver = start_chromium()
        driver.set_window_size(900, 900)  # a card as wide as the README shows it
        try:
            photograph(driver, caption, Path(args.out), args.word)
            photograph(driver, answers, Path(args.vqa_out), 0)
        finally:
            quit_chromium(driver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
