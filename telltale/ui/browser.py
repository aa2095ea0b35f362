"""Headless Chromium through selenium (Debian's chromium + chromium-driver; no downloads)."""

from __future__ import annotations

import os
import shutil

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def _find(names, env: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for n in names:
        p = shutil.which(n) or (f"/usr/bin/{n}" if os.path.exists(f"/usr/bin/{n}") else None)
        if p:
            return p
    return None


def headless_chrome(width: int = 1400, height: int = 1000):
    """A selenium Chrome driver on the local Chromium, console logs collected."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise RuntimeError("selenium is not installed: pip install 'telltale[browser]'") from None
    binary = _find(CHROMIUM, "TELLTALE_CHROMIUM")
    driver = _find(DRIVERS, "TELLTALE_CHROMEDRIVER")
    if not binary or not driver:
        raise RuntimeError("headless Chromium not found: apt-get install chromium "
                           "chromium-driver (or set TELLTALE_CHROMIUM / TELLTALE_CHROMEDRIVER)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--hide-scrollbars", "--force-color-profile=srgb",
              "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def console_errors(driver) -> list[dict]:
    """Browser console entries of level SEVERE since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
