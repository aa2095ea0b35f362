"""The live dashboard in a real headless Chromium, fed by `telltale demo --ui` as it runs."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from telltale.simulate import DEMO_RUNS, SERVE_RUN
from telltale.ui.data import explain
from tests.support import ROOT, wait_for
from tests.support.browser import chromium, js

ARTIFACTS = ROOT / "artifacts"


class Demo:
    """`telltale demo --ui` in a subprocess; its stdout collected line by line."""

    def __init__(self, store, rate: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telltale", "demo", "--ui", "--port", "0", "--rate",
             str(rate), "--store-dir", str(store)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(store.parent)})
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def url(self) -> str:
        m = wait_for(lambda: re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", self.output()),
                     timeout=60, what="the dashboard URL")
        return m.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture
def browser():
    d = chromium()
    d.collected_errors = []
    yield d
    d.quit()


def errors(driver) -> list[dict]:
    from telltale.ui.browser import console_errors

    driver.collected_errors += console_errors(driver)
    return driver.collected_errors


def click(driver, css: str, timeout: float = 20.0):
    """Click the element once it exists (retried while the page re-renders it)."""
    from selenium.common.exceptions import (
        ElementClickInterceptedException,
        NoSuchElementException,
        StaleElementReferenceException,
    )

    deadline = time.monotonic() + timeout
    while True:
        try:
            e = driver.find_element("css selector", css)
            js(driver, "arguments[0].scrollIntoView({block: 'center'})", e)
            e.click()
            return e
        except (NoSuchElementException, StaleElementReferenceException,
                ElementClickInterceptedException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def full_screenshot(driver, path, height: int | None = None) -> None:
    """The whole page (or its top ``height`` pixels) as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    js(driver, "window.scrollTo(0, 0)")
    h = height or js(driver, "return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(max(h, 800), 7000))
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)


def test_live_dashboard_follows_the_demo(tmp_path, browser):
    store = tmp_path / "store"
    demo = Demo(store, rate=40)  # 600 steps in about 15 s
    try:
        url = demo.url()
        d = browser
        d.get(url)
        js(d, "window.__loadedOnce = 42")
        names = [r.run for r in DEMO_RUNS] + [SERVE_RUN.run]

        def listed():
            return js(d, "return Array.from(document.querySelectorAll('tr.run-row'))"
                         ".map(r => [r.dataset.run, +r.cells[3].textContent])")

        rows = wait_for(lambda: len(listed()) == len(names) and listed(), timeout=30,
                        what="every demo run listed")
        first = dict(rows)["demo-spike"]
        assert "summary" not in demo.output(), "the demo ended before the page saw it running"
        later = wait_for(lambda: dict(listed())["demo-spike"] > first and listed(),
                         timeout=30, what="the last step to grow without a reload")
        assert js(d, "return window.__loadedOnce") == 42  # same page: polled, not reloaded
        assert dict(later)["demo-spike"] > first
        wait_for(lambda: "dashboard still up" in demo.output(), timeout=60,
                 what="the demo to finish")
        wait_for(lambda: all(s == 600 for _, s in listed()), timeout=10,
                 what="every run at step 600")

        # the injected spike: a marker on the loss chart, with its explanation
        alerts = [json.loads(x) for x in (store / "alerts.log.jsonl").open()]
        spike = next(a for a in alerts if a["run"] == "demo-spike" and a["metric"] == "loss"
                     and a["step"] == 300)
        click(d, "tr.run-row[data-run='demo-spike']")
        marker = click(d, "#panel-train-loss .alert-marker[data-step='300']")
        assert marker.get_attribute("title") == explain(dict(spike))
        detail = d.find_element("id", "alert-detail")
        assert detail.is_displayed()
        # (the loss finding: it opened the spike's incident or joined it at the same step)
        assert spike["state"] in ("firing", "updated")
        assert explain(dict(spike)) in detail.text and "step 300" in detail.text
        # the incidents table lists the incident the finding belongs to
        table = d.find_element("id", "alerts-table")
        assert table.find_elements("css selector", f"tr[data-id='{spike['id']}']")
        # the other panels of a training run
        assert len(d.find_elements("css selector", "#group-internals canvas")) >= 6
        outlier = d.find_element("css selector", "#panel-res-gpu_util .outlier").text
        assert "rank 3" in outlier  # the simulated straggler stands out
        ARTIFACTS.mkdir(exist_ok=True)
        js(d, "document.getElementById('alert-detail').hidden = true")
        full_screenshot(d, ARTIFACTS / "ui-live.png")
        full_screenshot(d, ARTIFACTS / "ui-live-top.png", height=1500)

        # an inference run: its panels, and internals say they are absent
        click(d, "tr.run-row[data-run='demo-serve']")
        wait_for(lambda: d.find_elements("css selector", "#panel-infer-latency canvas"),
                 timeout=20, what="the inference latency panel")
        text = d.find_element("id", "run").text
        assert "No model internals in this run" in text and "latency p99 ms" in text
        full_screenshot(d, ARTIFACTS / "ui-inference.png")
        assert errors(d) == []

        # the API answers bad requests with a clear error
        for path, code in (("api/run/no-such-run", 404), ("api/run/demo-spike?k=abc", 400)):
            try:
                urllib.request.urlopen(url + path, timeout=10)
                raise AssertionError(f"{path} answered 200")
            except urllib.error.HTTPError as exc:
                assert exc.code == code and json.loads(exc.read())["error"]
    finally:
        rc = demo.stop()
    assert rc in (0, 130), demo.output()


def test_telltale_ui_finds_the_demo_store_and_stops_on_ctrl_c(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "telltale", "demo", "--rate", "0"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ui = subprocess.Popen([sys.executable, "-m", "telltale", "ui", "--port", "0"], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ui.stdout.readline()
        m = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/) \(local store (.*)\)", line)
        assert m and m.group(2) == "telltale-data/demo", line
        with urllib.request.urlopen(m.group(1) + "api/runs", timeout=10) as r:
            runs = json.load(r)["runs"]
        assert {r["run"] for r in runs} == {r.run for r in DEMO_RUNS} | {SERVE_RUN.run}
        assert all(r["last_step"] == 600 for r in runs)
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(20) == 130
