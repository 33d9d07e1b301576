"""Headless Chromium driven by Selenium (Debian's ``chromium`` and ``chromium-driver``): what
``scripts/screenshot_explorer.py`` photographs the attention explorer with, and what the
explorer's tests drive (``tests/browser.py`` skips where Chromium is missing; ``.ci/run``
installs it). Selenium is a ``[dev]`` dependency, imported when a browser starts."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_missing() -> str | None:
    """Why Chromium cannot start here, or None when it can."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return None
    return f"needs Chromium: {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"


def start_chromium():
    """A fresh headless Chromium (its own profile, no network of its own: no updates, sync or
    QUIC probes) that keeps the page's console. Quit it and remove ``driver.profile``."""
    missing = chromium_missing()
    if missing:
        raise RuntimeError(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="explorer-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.profile = profile
    return driver


def quit_chromium(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """The page's console errors since the last call (uncaught exceptions included)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def drawn(driver, canvas, timeout: float = 10.0):
    """``canvas`` once its picture has decoded and been drawn (images decode asynchronously)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda _: canvas.get_attribute("data-drawn") == "1")
    return canvas


def pixels(element) -> np.ndarray:
    """What ``element`` shows on screen, (H, W, 3) uint8."""
    with Image.open(io.BytesIO(element.screenshot_as_png)) as im:
        return np.asarray(im.convert("RGB"))
