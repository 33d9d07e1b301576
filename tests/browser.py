"""Headless Chromium for the explorer's tests: ``bench.browser``'s, skipped (saying why) only
where Chromium is not installed; ``.ci/run`` installs it."""

from __future__ import annotations

import pytest

from bench import browser
from bench.browser import console_errors, drawn, pixels, quit_chromium

__all__ = ["console_errors", "drawn", "pixels", "quit_chromium", "start_chromium"]


def start_chromium():
    missing = browser.chromium_missing()
    if missing:
        pytest.skip(missing)
    return browser.start_chromium()
