"""The page people open when a run goes wrong, in a real headless Chromium: alerts on time,
the problem first, NaN shown, charts that keep their zoom, ``?k=``, the keyboard, compare."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from telltale.ui.data import HEALTH
from telltale.ui.server import UiServer
from telltale.ui.sources import LocalSource
from tests.support import ROOT, wait_for
from tests.support.browser import chromium, js
from tests.support.services import config_env

ARTIFACTS = ROOT / "artifacts"
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def browser():
    from telltale.ui.browser import console_errors

    d = chromium()
    yield d
    errors = [e for e in console_errors(d) if e.get("source") != "network"]  # 4xx: shown
    d.quit()
    assert not errors, errors


class PacedDemo:
    """`telltale demo --ui` paced, every stdout line stamped with the wall time it came."""

    def __init__(self, store, steps: int, rate: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telltale", "demo", "--ui", "--port", "0", "--steps",
             str(steps), "--rate", str(rate), "--store-dir", str(store)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**ENV, "HOME": str(store.parent)})
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append((time.time(), line))

    def output(self) -> str:
        return "".join(x for _, x in self.lines)

    def url(self) -> str:
        m = wait_for(lambda: re.search(r"dashboard: (http://127\.0\.0\.1:\d+/)", self.output()),
                     timeout=60, what="the dashboard URL")
        return m.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


SEEN_JS = """
window.__seen = {};
setInterval(function () {
  document.querySelectorAll('#problem[data-id], #alerts-table tr[data-id]').forEach(function (e) {
    var id = e.getAttribute('data-id');
    if (!(id in window.__seen)) window.__seen[id] = Date.now() / 1000;
  });
}, 50);
"""


def test_a_firing_alert_is_on_the_page_within_2s_of_its_publication(tmp_path, browser):
    """Embedded default: `telltale demo --ui --steps 400 --rate 12` (issue 17: the page said
    "ok / 0 alerts" for 110 steps after the terminal printed FIRING)."""
    store = tmp_path / "store"
    demo = PacedDemo(store, steps=400, rate=12)
    try:
        d = browser
        d.get(demo.url() + "#demo-spike")
        js(d, SEEN_JS)
        def progress():
            done = re.findall(r"progress: step (\d+)/", demo.output())
            return int(done[-1]) if done else 0

        wait_for(lambda: progress() >= 330, timeout=90,
                 what="the demo past its spike at step 300")
        time.sleep(3)
        seen = js(d, "return window.__seen")
        records = [json.loads(x) for x in (store / "alerts.log.jsonl").open()]
        firing = [(t, line) for t, line in demo.lines
                  if "FIRING demo-spike step" in line]
        assert firing, demo.output()
        lags = []
        for t, line in firing:
            step, msg = re.search(r"step (\d+): (.*)$", line.rstrip()).groups()
            rec = next(a for a in records if a["run"] == "demo-spike" and a["state"] == "firing"
                       and a["step"] == int(step) and a["message"] == msg)
            assert rec["id"] in seen, f"{rec['id']} ({msg}) never appeared on the page"
            lags.append(seen[rec["id"]] - t)
        print(f"publication → page: {len(lags)} firing records, lag max {max(lags):.2f} s, "
              f"median {sorted(lags)[len(lags) // 2]:.2f} s")
        assert max(lags) < 2.0, lags
        # and said aloud to screen readers (a polite live region)
        assert "new warning alert on demo-spike" in d.find_element("id", "announce") \
            .get_attribute("textContent")
    finally:
        demo.stop()


@pytest.mark.services
def test_kafka_mode_a_firing_alert_is_on_the_page_within_2s_of_the_topic(kafka_config,
                                                                        start_worker, browser):
    """Kafka mode: a worker, the page reading InfluxDB; lag from the alert topic to the page."""
    from telltale.ui.sources import InfluxSource
    from tests.support.kafka import TopicReader

    cfg = kafka_config
    worker = start_worker(cfg)
    worker.wait_ready()
    reader = TopicReader(cfg, cfg.alerts_topic)
    server = UiServer(InfluxSource(cfg)).start()
    demo = subprocess.Popen([sys.executable, "-m", "telltale", "demo", "--publish", "--steps",
                             "400", "--rate", "12"], env=config_env(cfg),
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        d = browser
        d.get(server.url + "#demo-spike")
        js(d, SEEN_JS)
        firing = wait_for(lambda: [(t, a) for t, a in reader.records if a["run"] == "demo-spike"
                                   and a["state"] == "firing" and a["step"] >= 300],
                          timeout=120, what="demo-spike's alerts on the topic")
        time.sleep(4)
        firing = [(t, a) for t, a in reader.records
                  if a["run"] == "demo-spike" and a["state"] == "firing"]
        seen = js(d, "return window.__seen")
        missing = [a["message"] for _, a in firing if a["id"] not in seen]
        assert not missing, missing
        lags = [seen[a["id"]] - t for t, a in firing]
        print(f"alert topic → page (Kafka mode, InfluxDB): {len(lags)} firing records, "
              f"lag max {max(lags):.2f} s, median {sorted(lags)[len(lags) // 2]:.2f} s")
        assert max(lags) < 2.0, lags
    finally:
        demo.terminate()
        demo.wait(20)
        server.stop()
        reader.close()


# -- a finished demo, served by the dashboard ------------------------------------------------


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    store = base / "store"
    proc = subprocess.run([sys.executable, "-m", "telltale", "demo", "--rate", "0",
                           "--store-dir", str(store)], capture_output=True, text=True,
                          timeout=180, env={**ENV, "HOME": str(base)})
    assert proc.returncode == 0, proc.stderr
    return store


@pytest.fixture
def ui(demo_store):
    server = UiServer(LocalSource(str(demo_store))).start()
    yield server.url
    server.stop()


def api(url: str, path: str):
    try:
        with urllib.request.urlopen(url + path, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def open_run(d, url: str, run: str, query: str = ""):
    d.get(f"{url}{query}#{run}")
    wait_for(lambda: js(d, "var h = document.querySelector('#run-head h2');"
                           "return h && h.textContent.indexOf(arguments[0]) === 0", run),
             timeout=20, what=f"run {run} on the page")
    wait_for(lambda: js(d, "return document.querySelectorAll('.panel canvas').length > 0"),
             timeout=20, what="charts")


def chart(d, key: str, expr: str):
    """Evaluate ``expr`` with ``u`` the uPlot instance of the panel ``key``."""
    return js(d, "var p = document.querySelector('.panel[data-panel=\"' + arguments[0] + '\"]');"
                 "var u = p && p.querySelector('.uplot') && p.querySelector('.uplot').__u;"
                 "return (function (u) { return " + expr + "; })(u)", key)


def test_the_run_list_and_the_run_agree_worst_first(ui, browser):
    d = browser
    d.get(ui)
    # the first poll over old data: nothing is "live" (issue 17: every run said live for 10 s)
    rows = wait_for(lambda: js(d, "return Array.from(document.querySelectorAll('tr.run-row'))"
                                  ".map(r => [r.dataset.run, r.cells[2].textContent,"
                                  " r.cells[4].textContent])"), timeout=20, what="runs")
    assert all("idle" in status for _, status, _ in rows), rows
    _, doc = api(ui, "api/runs")
    by = {r["run"]: r for r in doc["runs"]}
    # the fast poll's answer: alert records per run, as the list counts them
    _, counts = api(ui, "api/runs?only=alerts")
    assert counts["alerts"] == {r: x["alert_records"] for r, x in by.items() if x["alert_records"]}
    # worst health first, the page in the API's order
    assert [r for r, _, _ in rows] == [r["run"] for r in doc["runs"]]
    ranks = [HEALTH.index(r["health"]) for r in doc["runs"]]
    assert ranks == sorted(ranks) and doc["runs"][-1]["run"] == "demo-clean"
    # demo-spike: its warnings all resolved -> "recovered", not "ok / 0"
    assert by["demo-spike"]["health"] == "recovered" and by["demo-spike"]["alerts"] >= 1
    for run, status, counts in rows:
        r = by[run]
        assert counts == (f"{r['open_alerts']} open / {r['alerts']}" if r["alerts"] else "0")
        assert r["health"] in status
        # the run view and its incidents table say the same
        _, view = api(ui, f"api/run/{run}")
        assert (view["health"], view["open_alerts"], view["status"]) == (
            r["health"], r["open_alerts"], r["status"])
        assert sum(a["status"] == "open" for a in view["alerts"]) == r["open_alerts"]
    open_run(d, ui, "demo-diverge")
    table = js(d, "return Array.from(document.querySelectorAll('#alerts-table tr[data-id]'))"
                  ".map(r => r.cells[2].textContent)")
    assert sum(t.startswith("open") for t in table) == by["demo-diverge"]["open_alerts"]


def test_a_run_opens_on_its_worst_open_incident(ui, browser):
    d = browser
    open_run(d, ui, "demo-diverge")
    _, view = api(ui, "api/run/demo-diverge")
    worst = view["problem"]
    # one incident: the learning-rate jump pages, the loss divergence joins it
    assert worst and worst["severity"] == "critical" and worst["metric"] == "lr"
    assert "loss" in worst["contributors"]
    box = d.find_element("id", "problem")
    text = box.text
    for part in (worst["message"], worst["explanation"], worst["cause"], worst["action"]):
        assert part and part in text, part
    assert "Likely cause" in text and "Next step" in text
    # the first thing on the run: above the incidents table and every chart, in the first screen
    top = js(d, "return [document.getElementById('problem').getBoundingClientRect().top,"
                " document.getElementById('alerts-table').getBoundingClientRect().top,"
                " document.querySelector('.panel').getBoundingClientRect().top]")
    assert top[0] < top[1] < top[2] and top[0] < 300, top
    assert d.title.startswith("demo-diverge")
    # the link to the chart at that step: zoomed around it, its marker focused, in the URL
    panel = f"train-{worst['metric']}"
    d.find_element("css selector", "#problem a.chart-link").click()
    time.sleep(0.5)
    lo, hi, xmin, xmax = chart(d, panel, "[u.scales.x.min, u.scales.x.max, u.data[0][0],"
                                                " u.data[0][u.data[0].length - 1]]")
    assert lo <= worst["step"] <= hi and hi - lo < (xmax - xmin) / 2
    focused = js(d, "return document.activeElement.getAttribute('data-id')")
    assert focused == worst["id"]
    assert f"panel={panel}" in d.current_url and f"step={worst['step']}" in d.current_url
    # the same link opened cold lands on the same zoomed chart
    d.get(d.current_url.replace("#", "?x=1#"))
    wait_for(lambda: chart(d, panel, "u && u.scales.x.max - u.scales.x.min < "
                                            "(u.data[0][u.data[0].length - 1] - u.data[0][0]) / 2"),
             timeout=20, what="the deep link's zoom")
    ARTIFACTS.mkdir(exist_ok=True)
    d.get(ui + "#demo-diverge")
    wait_for(lambda: d.find_elements("id", "problem"), timeout=20, what="the problem box")
    time.sleep(1)
    d.save_screenshot(str(ARTIFACTS / "ui-problem-first.png"))


def test_a_nan_stretch_is_shaded_labelled_and_the_final_value_is_nan(ui, browser):
    d = browser
    open_run(d, ui, "demo-nan")
    _, view = api(ui, "api/run/demo-nan")
    onset = next(a["step"] for a in view["alerts"] if a["detector"] == "nonfinite")
    bands = js(d, "return Array.from(document.querySelectorAll("
                  "'#panel-train-loss .nonfinite-band')).map(b => [+b.dataset.from, "
                  "+b.dataset.to, b.textContent, b.getBoundingClientRect().width])")
    assert bands, "no shaded non-finite stretch on the loss chart"
    first, last, label, width = bands[0]
    assert first == onset and last == 600 and f"NaN from step {onset}" in label and width > 50
    # the chart runs to the run's last step (not cut at the last finite value)
    assert chart(d, "train-loss", "u.data[0][u.data[0].length - 1]") == 600
    final = js(d, "return document.querySelector('#metrics-table tr[data-metric=\"loss\"] "
                  "td.final').textContent")
    assert final.startswith("NaN"), final
    assert "non-finite" in js(d, "return document.querySelector('#panel-train-loss canvas')"
                                 ".getAttribute('aria-label')")


def grow(store, run: str) -> None:
    """Append the run's next training step to the local store (a copy of the last one)."""
    lines = (store / "metrics.jsonl").read_text().splitlines()
    last = max((json.loads(x) for x in lines if f'"run":"{run}"' in x and '"kind":"train"' in x
                and '"rank":"0"' in x and '"loss"' in x), key=lambda p: p["time"])
    last["fields"]["step"] += 1
    last["time"] += 50_000_000
    with (store / "metrics.jsonl").open("a") as f:
        f.write(json.dumps(last, separators=(",", ":")) + "\n")


@pytest.fixture
def live_ui(demo_store, tmp_path):
    """The dashboard over a copy of the demo's store, which the test may grow."""
    store = tmp_path / "store"
    shutil.copytree(demo_store, store)
    server = UiServer(LocalSource(str(store))).start()
    yield server.url, store
    server.stop()


def test_charts_log_scale_fitted_axes_hover_zoom_smoothing(live_ui, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    ui, store = live_ui
    d = browser
    open_run(d, ui, "demo-diverge")
    _, view = api(ui, "api/run/demo-diverge")
    loss = next(p for p in view["training"] if p["metric"] == "loss")
    vals = [v for v in loss["lines"][0]["values"] if v is not None]
    assert max(vals) / min(vals) > 100  # the diverging loss spans more than two decades
    # log scale on by default, the y axis fitted to the data (the band does not stretch it)
    assert d.find_element("css selector", "#panel-train-loss input.log-scale").is_selected()
    distr, ymin, ymax = chart(d, "train-loss", "[u.scales.y.distr, u.scales.y.min, u.scales.y.max]")
    assert distr == 3 and min(vals) / 2 < ymin <= min(vals) and max(vals) <= ymax < max(vals) * 2
    # the score axis is one 0..1 scale and the legend says so
    assert chart(d, "train-loss", "[u.scales.score.min, u.scales.score.max]") == [0, 1]
    assert "0..1 scale" in d.find_element("css selector", "#panel-train-loss .notes").text
    # an accuracy axis stays within what accuracy did (not −1…2)
    amin, amax = chart(d, "train-accuracy", "[u.scales.y.min, u.scales.y.max]")
    assert -0.1 < amin and amax < 1.1
    # hover: values in the legend, and the cursor synced to the other panels
    canvas = d.find_element("css selector", "#panel-train-loss .u-over")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    ActionChains(d).move_to_element_with_offset(canvas, 100, 40).perform()
    time.sleep(0.3)
    legend = d.find_element("css selector", "#panel-train-loss .u-legend").text
    assert re.search(r"step\s*\d+", legend) and re.search(r"loss\s*:?\s*\d", legend), legend
    other = chart(d, "train-val_loss", "u.cursor.left")
    assert other is not None and other > 0
    # zoom: drag a range; it survives three polls; reset brings the whole run back
    ActionChains(d).move_to_element_with_offset(canvas, -200, 0).click_and_hold() \
        .move_by_offset(150, 0).release().perform()
    time.sleep(0.3)
    zoom = chart(d, "train-loss", "[u.scales.x.min, u.scales.x.max]")
    assert zoom[1] - zoom[0] < 300, zoom
    # the run grows while the page polls: three polls with new steps, each redrawn; the
    # zoom stays, and so does the keyboard focus on an incident row
    row = js(d, "var r = document.querySelector('#alerts-table tr[data-id]');"
                "r.focus({preventScroll: true}); return r.dataset.id")
    for step in (601, 602, 603):
        grow(store, "demo-diverge")
        wait_for(lambda s=step: chart(d, "train-loss", "u.data[0][u.data[0].length - 1]") == s,
                 timeout=10, what=f"a poll with step {step}")
        assert chart(d, "train-loss", "[u.scales.x.min, u.scales.x.max]") == zoom
    assert js(d, "var e = document.activeElement; return e.matches('#alerts-table tr') "
                 "&& e.dataset.id") == row
    d.find_element("css selector", "#panel-train-loss button.reset-zoom").click()
    assert chart(d, "train-loss", "[u.scales.x.min, u.scales.x.max]") == [1, 603]
    # smoothing: an EMA line over a faint raw one
    slider = d.find_element("id", "smoothing")
    js(d, "arguments[0].value = '0.9'; arguments[0].dispatchEvent(new Event('input'))", slider)
    labels = chart(d, "train-loss", "u.series.map(s => s.label)")
    assert "loss (raw)" in labels and any("EMA 0.9" in x for x in labels)
    raw, smooth = chart(d, "train-loss", "[u.data[1], u.data[2]]")
    assert raw != smooth
    # the user can turn log off; the choice survives polls
    d.find_element("css selector", "#panel-train-loss input.log-scale").click()
    time.sleep(2.5)
    assert chart(d, "train-loss", "u.scales.y.distr") == 1


def test_inference_panels_have_one_unit_each_and_their_own_alerts(ui, browser):
    d = browser
    open_run(d, ui, "demo-serve")
    keys = js(d, "return Array.from(document.querySelectorAll('#group-inference .panel'))"
                 ".map(p => p.dataset.panel)")
    assert {"infer-latency", "infer-ttft", "infer-errors"} <= set(keys)
    _, view = api(ui, "api/run/demo-serve")
    burst = [a["id"] for a in view["alerts"] if a["detector"] == "errorburst"]
    assert burst

    def markers(key):
        return js(d, "return Array.from(document.querySelectorAll('.panel[data-panel=\"' + "
                     "arguments[0] + '\"] .alert-marker')).map(m => m.dataset.id)", key)

    assert set(burst) <= set(markers("infer-errors"))
    assert not set(burst) & set(markers("infer-latency"))
    # ttft is drawn on its own axis: its p50 is not flattened to 0 by the latency p99
    ymin, ymax = chart(d, "infer-ttft", "[u.scales.y.min, u.scales.y.max]")
    p50 = [v for v in next(p for p in view["inference"]["panels"] if p["key"] == "ttft")
           ["series"]["ttft p50 ms"] if v is not None]
    assert ymin <= min(p50) and ymax < 10 * max(p50)
    # the error-burst explanation speaks of requests and rates, never of σ below a mean
    for a in view["alerts"]:
        if a["detector"] == "errorburst":
            assert "requests" in a["explanation"] and "σ" not in a["explanation"]
        if a["detector"] == "p99":
            assert "p99" in a["explanation"] and "below" not in a["explanation"]


def test_k_is_honoured_on_the_page_and_refused_alike(ui, browser, demo_store, tmp_path):
    d = browser
    open_run(d, ui, "demo-spike", query="?k=1.5")
    assert "mean ± 1.5·std" in d.find_element("css selector", "#panel-train-loss .notes").text
    _, narrow = api(ui, "api/run/demo-spike?k=1.5")
    band = next(p for p in narrow["training"] if p["metric"] == "loss")["band"]
    page_hi = chart(d, "train-loss", "u.data[u.series.findIndex(s => s.label === 'mean+1.5σ')]")
    assert page_hi == band["hi"]
    code, err = api(ui, "api/run/demo-spike?k=-1")
    assert code == 400
    d.get(ui + "?k=-1#demo-spike")
    shown = wait_for(lambda: d.find_element("id", "error").text, timeout=20,
                     what="the page's error")
    assert shown == err["error"] and "k must be a number in (0, 20]" in shown
    proc = subprocess.run([sys.executable, "-m", "telltale", "report", "demo-spike", "--k", "-1",
                           "--store-dir", str(demo_store), "--out", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and err["error"] in proc.stderr
    assert not (tmp_path / "r.html").exists()


def _contrast(fg, bg) -> float:
    def lum(c):
        def ch(v):
            v = v / 255
            return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
        return 0.2126 * ch(c[0]) + 0.7152 * ch(c[1]) + 0.0722 * ch(c[2])

    a, b = sorted((lum(fg), lum(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def test_keyboard_path_severity_shapes_contrast_and_names(ui, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(ui)
    wait_for(lambda: d.find_elements("css selector", "a.run-link"), timeout=20, what="runs")

    def tab_until(pred_js: str, limit: int = 200):
        for _ in range(limit):
            ActionChains(d).send_keys(Keys.TAB).perform()
            if js(d, "var e = document.activeElement; return " + pred_js):
                return True
        raise AssertionError(f"Tab never reached {pred_js}")

    # rows: Tab to the run, Enter opens it
    tab_until("e.matches('a.run-link[data-run=\"demo-spike\"]')")
    ActionChains(d).send_keys(Keys.ENTER).perform()
    wait_for(lambda: d.title.startswith("demo-spike") and js(
        d, "return document.querySelectorAll('#panel-train-loss canvas').length"),
        timeout=20, what="demo-spike's charts")
    # markers: Tab reaches an alert marker on a chart; Enter opens its explanation
    tab_until("e.classList.contains('alert-marker')")
    marker_id = js(d, "return document.activeElement.dataset.id")
    marker_key = js(d, "return document.activeElement.dataset.key")
    ActionChains(d).send_keys(Keys.ENTER).perform()
    box = d.find_element("id", "alert-detail")
    assert box.is_displayed() and js(d, "return document.getElementById('alert-detail')"
                                        ".contains(document.activeElement)")
    _, view = api(ui, "api/run/demo-spike")
    # an incident's own marker, or the marker of a finding that joined it (its own panel)
    a = view["markers"].get(marker_key) or next(x for x in view["alerts"]
                                                 if x["id"] == marker_id)
    assert a["explanation"] in box.text and a["message"] in box.text
    # Esc closes it and gives the focus back to the marker
    ActionChains(d).send_keys(Keys.ESCAPE).perform()
    assert not box.is_displayed()
    assert js(d, "return document.activeElement.dataset.id") == marker_id
    # severity by shape and word, not colour alone
    for sev, shape in (("critical", "◆"), ("warning", "▲")):
        texts = js(d, "return Array.from(document.querySelectorAll('.badge.' + arguments[0]))"
                      ".map(b => b.textContent)", sev)
        assert texts and all(shape in t and sev in t for t in texts), texts
    assert all(m.text in ("◆", "▲", "●") for m in d.find_elements("css selector", ".alert-marker"))
    # every chart has an accessible name
    names = js(d, "return Array.from(document.querySelectorAll('.panel canvas'))"
                  ".map(c => c.getAttribute('aria-label'))")
    assert names and all(names), names
    # WCAG AA: text on badges, muted notes and table text at 4.5:1 at least
    pairs = js(d, """
      function bg(e) { while (e) { var c = getComputedStyle(e).backgroundColor;
        if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; e = e.parentElement; }
        return 'rgb(255, 255, 255)'; }
      return Array.from(document.querySelectorAll('.badge, .muted, .note, td, th, a'))
        .filter(e => e.offsetParent && e.textContent.trim())
        .map(e => [e.className + ' ' + e.textContent.slice(0, 20),
                   getComputedStyle(e).color, bg(e)]);
    """)

    def rgb(s):
        return [int(x) for x in re.findall(r"\d+", s)[:3]]

    low = [(what, round(_contrast(rgb(fg), rgb(bg)), 2)) for what, fg, bg in pairs
           if _contrast(rgb(fg), rgb(bg)) < 4.5]
    assert not low, low[:10]


def test_compare_runs_overlays_a_metric_and_the_url_keeps_it(ui, browser):
    d = browser
    d.get(ui)
    wait_for(lambda: d.find_elements("css selector", "input.compare-box"), timeout=20,
             what="compare boxes")
    for run in ("demo-spike", "demo-diverge"):
        d.find_element("css selector", f"input.compare-box[data-run='{run}']").click()
    d.find_element("id", "compare-button").click()
    key = "compare-loss"
    wait_for(lambda: chart(d, key, "!!u"), timeout=20, what="the overlay chart")
    labels = chart(d, key, "u.series.map(s => s.label)")
    assert sorted(labels[1:]) == ["demo-diverge", "demo-spike"]
    url = d.current_url
    assert re.search(r"compare=demo-(spike%2Cdemo-diverge|diverge%2Cdemo-spike)", url), url
    # aligned by step: both runs' values at the same x positions
    steps, a, b = chart(d, key, "[u.data[0], u.data[1], u.data[2]]")
    assert steps == sorted(steps) and sum(x is not None for x in a) > 500 \
        and sum(x is not None for x in b) > 500
    # another metric; the URL says which, and a fresh load shows the same overlay
    from selenium.webdriver.support.ui import Select

    Select(d.find_element("id", "compare-metric")).select_by_value("val_loss")
    wait_for(lambda: chart(d, "compare-val_loss", "!!u"), timeout=20, what="val_loss overlay")
    assert "metric=val_loss" in d.current_url
    fresh = d.current_url
    d.get("about:blank")
    d.get(fresh)
    wait_for(lambda: chart(d, "compare-val_loss", "!!u"), timeout=20, what="the overlay again")
    assert chart(d, "compare-val_loss", "u.series.map(s => s.label)")[1:] == labels[1:]
    checked = js(d, "return Array.from(document.querySelectorAll('input.compare-box:checked'))"
                    ".map(b => b.dataset.run)")
    assert sorted(checked) == ["demo-diverge", "demo-spike"]
    assert d.title.startswith("compare")
