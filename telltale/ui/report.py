"""``telltale report``: one run as a single self-contained HTML file (and PNGs per panel).

The report embeds the run's view (see :func:`telltale.ui.data.build_view`), the page's
script and styles and the vendored uPlot, so it opens anywhere with no server and no
network. PNGs are screenshots of each panel in headless Chromium.
"""

from __future__ import annotations

import html
import json
import os
import re
import time

from telltale.ui.server import static_bytes


def _script_json(doc) -> str:
    """JSON safe inside a <script> element."""
    s = json.dumps(doc, allow_nan=False, default=str, separators=(",", ":"))
    return s.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(view: dict, source: str = "") -> str:
    """The self-contained HTML report of one run's view."""
    css = static_bytes("vendor/uPlot.min.css").decode() + "\n" + static_bytes("app.css").decode()
    js_lib = static_bytes("vendor/uPlot.iife.min.js").decode().replace("</script", "<\\/script")
    js_app = static_bytes("app.js").decode()
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    title = html.escape(f"Telltale report: {view['run']}")
    source = html.escape(source)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<header><h1>Telltale report</h1><span>{source}</span><span>made {made}</span></header>
<div id="layout"><main id="run"></main></div>
<div id="alert-detail" hidden></div>
<footer>Charts: uPlot (MIT licence, © Leon Sorokin), embedded.</footer>
<script>window.TELLTALE_REPORT = {_script_json(view)};</script>
<script>{js_lib}</script>
<script>{js_app}</script>
</body>
</html>
"""


def write_pngs(html_path: str, out_dir: str) -> list[str]:
    """One PNG per panel (and the summary), by headless Chromium; returns the paths."""
    from selenium.webdriver.common.by import By

    from telltale.ui.browser import headless_chrome

    os.makedirs(out_dir, exist_ok=True)
    driver = headless_chrome()
    paths = []
    try:
        driver.get("file://" + os.path.abspath(html_path))
        deadline = time.monotonic() + 30
        while not driver.execute_script("return window.TELLTALE_RENDERED === true"):
            if time.monotonic() > deadline:
                raise RuntimeError("the report did not render in 30 s")
            time.sleep(0.1)
        head = driver.find_element(By.ID, "run-head")
        paths.append(os.path.join(out_dir, "00-summary.png"))
        head.screenshot(paths[-1])
        for i, panel in enumerate(driver.find_elements(By.CSS_SELECTOR, ".panel"), 1):
            key = panel.get_attribute("data-panel") or f"panel-{i}"
            slug = re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-")
            driver.execute_script("arguments[0].scrollIntoView()", panel)
            paths.append(os.path.join(out_dir, f"{i:02d}-{slug}.png"))
            panel.screenshot(paths[-1])
    finally:
        driver.quit()
    return paths
