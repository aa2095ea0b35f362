"""Driving the headless Chromium (Debian's) through Selenium."""

from __future__ import annotations

import pytest


def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver; the test fails (never skips) when it cannot start."""
    from telltale.ui.browser import headless_chrome

    try:
        return headless_chrome(width, height)
    except Exception as exc:  # no Chromium is a failure here, never a skip
        pytest.fail(f"headless Chromium did not start: {exc}", pytrace=False)


def js(driver, code: str, *args):
    """Run ``code`` in the page; its return value."""
    return driver.execute_script(code, *args)
