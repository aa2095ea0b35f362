"""`telltale report`: self-contained HTML (and PNGs) from an events file or the local store,
rendered in a real headless Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from telltale.ui.data import explain, incidents
from tests.support import ROOT, SHARED

TRAINFAULTS = SHARED / "data" / "trainfaults-dev"
ARTIFACTS = ROOT / "artifacts"


def telltale(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telltale", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def straggler_run() -> str:
    labels = json.loads((TRAINFAULTS / "labels.json").read_text())["runs"]
    return next(r for r, lab in labels.items() if lab["fault"] == "straggler")


def test_report_from_a_trainfaults_file_renders_in_chromium(tmp_path):
    from telltale.ui.browser import console_errors, headless_chrome

    run = straggler_run()
    events = TRAINFAULTS / "runs" / f"{run}.jsonl"
    out = tmp_path / "report.html"
    t0 = time.perf_counter()
    proc = telltale("report", run, "--events", events, "--out", out, "--png")
    took = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    print(f"report with PNGs in {took:.1f} s")
    html = out.read_text()
    # self-contained: nothing is loaded from anywhere else
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "<script>window.TELLTALE_REPORT" in html and "uPlot" in html

    # what the report must show, computed independently with `telltale detect`
    alerts_file = tmp_path / "alerts.jsonl"
    assert telltale("detect", events, "--out", alerts_file).returncode == 0
    alerts = [json.loads(x) for x in alerts_file.open()]
    assert alerts, "the straggler run raises alerts"
    steps = [json.loads(x)["step"] for x in events.open()]

    try:
        d = headless_chrome(1300, 1000)
    except Exception as exc:
        pytest.fail(f"headless Chromium did not start: {exc}", pytrace=False)
    try:
        d.get(out.as_uri())
        deadline = time.monotonic() + 20
        while not d.execute_script("return window.TELLTALE_RENDERED === true"):
            assert time.monotonic() < deadline, "the report did not render"
            time.sleep(0.1)
        summary = d.find_element("id", "summary-table").text
        assert f"{min(steps)}–{max(steps)}" in summary
        # the report opens on the run's worst open incident, and its title names the run
        assert d.title.startswith(run)
        problem = d.find_element("id", "problem").text
        worst = next(a for a in incidents(alerts) if a["id"] ==
                     d.find_element("id", "problem").get_attribute("data-id"))
        assert worst["message"] in problem and "Next step" in problem
        rows = d.find_elements("css selector", "#alerts-table tr[data-id]")
        # one row per incident (its firing, updated and resolved records share the id)
        assert sorted(r.get_attribute("data-id") for r in rows) == sorted({a["id"] for a in alerts})
        table = d.find_element("id", "alerts-table").text
        for a in incidents(alerts):
            assert explain(dict(a)) in table
        # the straggling rank stands out in its step time
        slow = json.loads((TRAINFAULTS / "labels.json").read_text())["runs"][run]
        outlier = d.find_element("css selector", "#panel-res-step_time_s .outlier").text
        assert f"rank {slow['fault_params']['rank']}" in outlier
        # every panel drew a chart (uPlot canvas) and the internals panel says it has none
        panels = d.find_elements("css selector", ".panel")
        assert panels and all(p.find_elements("css selector", "canvas") for p in panels)
        assert "No model internals in this run" in d.find_element("id", "run").text
        assert console_errors(d) == []
        ARTIFACTS.mkdir(exist_ok=True)
        d.set_window_size(1300, 1400)
        time.sleep(0.3)
        d.save_screenshot(str(ARTIFACTS / "report-top.png"))
        h = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1300, min(h, 7000))
        time.sleep(0.3)
        d.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        d.quit()
    pngs = sorted((tmp_path / "report-png").glob("*.png"))
    assert len(pngs) == len(panels) + 1  # one per panel and the summary
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_report_from_the_demo_store_and_bad_input(tmp_path):
    store = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-m", "telltale", "demo", "--rate", "0",
                           "--store-dir", str(store)], capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "nan.html"
    proc = telltale("report", "demo-nan", "--store-dir", store, "--out", out)
    assert proc.returncode == 0, proc.stderr
    nan_alerts = [a for a in map(json.loads, (store / "alerts.log.jsonl").open())
                  if a["run"] == "demo-nan"]
    html = out.read_text()
    assert nan_alerts and all(json.dumps(a["message"])[1:-1] in html for a in nan_alerts)

    proc = telltale("report", "no-such-run", "--store-dir", store)
    assert proc.returncode == 2 and "runs there: demo-clean" in proc.stderr
    proc = telltale("report", "x", "--events", tmp_path / "missing.jsonl")
    assert proc.returncode == 2 and "no events file" in proc.stderr
    proc = telltale("report", "x", "--store-dir", tmp_path / "nowhere")
    assert proc.returncode == 2 and "telltale demo" in proc.stderr
