"""Kafka mode: the demo through a worker into InfluxDB; every Chronograf dashboard query
returns data, the worker's own dashboard (Faust web server) serves it, and a report is
made from InfluxDB."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from telltale.simulate import DEMO_RUNS, SERVE_RUN, simulate, simulate_serve, simulate_system
from tests.support import ROOT, wait_for
from tests.support.influx import influxql, run_points
from tests.support.servers import free_port
from tests.support.services import config_env, isolated_config
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.services

DASHBOARDS = sorted((ROOT / "dashboards" / "chronograf").glob("*.json"))


def expected_events() -> dict[str, int]:
    n = {r.run: len(list(simulate(r))) + len(list(simulate_system(r))) for r in DEMO_RUNS}
    n[SERVE_RUN.run] = len(list(simulate_serve()))
    return n


def concrete(q: str, db: str, run: str) -> str:
    """Replace Chronograf's template variables as Chronograf would, for a run and the last hour."""
    q = q.replace('"telltale"."autogen".', f'"{db}"."autogen".')
    for var, value in ((":dashboardTime:", "now() - 1h"), (":upperDashboardTime:", "now() + 1h"),
                       (":interval:", "1s"), (":run:", f"'{run}'")):
        q = q.replace(var, value)
    assert not re.search(r":\w+:", q), f"unreplaced template variable in {q}"
    return q


@pytest.fixture(scope="module")
def demo_in_influx(services, tmp_path_factory):
    """One worker (with its dashboard on) fed by `telltale demo --publish`."""
    tmp = tmp_path_factory.mktemp("chronograf")
    cfg = isolated_config(services, tmp / "worker", prefix="ui", partitions=2,
                          web_port=free_port())
    import os

    old = {k: os.environ.get(k) for k in ("TELLTALE_WORKER_UI", "TELLTALE_WEB_PORT")}
    os.environ.update(TELLTALE_WORKER_UI="1", TELLTALE_WEB_PORT=str(cfg.web_port))
    try:
        worker = WorkerProcess(cfg, tmp / "w0")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    try:
        worker.wait_ready()
        proc = subprocess.run([sys.executable, "-m", "telltale", "demo", "--publish", "--rate",
                               "0"], env=config_env(cfg), capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, proc.stderr
        for run, n in expected_events().items():
            wait_for(lambda run=run, n=n: run_points(cfg, run) == n, timeout=90,
                     what=f"{n} events of {run} in InfluxDB")
        wait_for(lambda: influxql(cfg, 'SELECT count("score") FROM "alerts"'), timeout=30,
                 what="alerts in InfluxDB")
        yield cfg, worker
    finally:
        worker.stop()


def test_dashboards_are_chronograf_documents_mounted_by_compose():
    assert {p.stem for p in DASHBOARDS} == {"training", "internals", "resources", "inference",
                                          "alerts"}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["chronograf"]["volumes"]
    for p in DASHBOARDS:
        doc = json.loads(p.read_text())
        assert doc["name"].startswith("Telltale") and doc["cells"]
        for c in doc["cells"]:
            assert {"x", "y", "w", "h", "name", "queries", "type"} <= set(c)
            assert all(q["type"] == "influxql" and q["query"] for q in c["queries"])
        assert doc["templates"][0]["tempVar"] == ":run:"
        assert any(m.startswith(f"./dashboards/chronograf/{p.name}:") and
                   m.split(":")[1].endswith(".dashboard") for m in mounts), p.name


def test_every_dashboard_query_returns_data(demo_in_influx):
    cfg, _ = demo_in_influx
    ran = 0
    for p in DASHBOARDS:
        doc = json.loads(p.read_text())
        run = next(v["value"] for v in doc["templates"][0]["values"] if v["selected"])
        for c in doc["cells"]:
            for q in c["queries"]:
                sql = concrete(q["query"], cfg.influx_db, run)
                series = influxql(cfg, sql)
                values = [v for s in series for row in s["values"] for v in row[1:]
                          if v is not None]
                assert values, f"{p.name} / {c['name']}: no data for {sql}"
                ran += 1
    print(f"{ran} dashboard queries, all with data")
    assert ran >= 25


def test_worker_serves_the_dashboard_from_influxdb(demo_in_influx, tmp_path):
    cfg, worker = demo_in_influx
    base = f"http://127.0.0.1:{cfg.web_port}/ui/"

    def get(path):
        try:
            with urllib.request.urlopen(base + path, timeout=30) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"GET {path}: {exc}\n{worker.log()[-3000:]}") from None

    status, ctype, body = get("")
    assert status == 200 and b"static/app.js" in body
    status, ctype, body = get("static/vendor/uPlot.iife.min.js")
    assert status == 200 and "javascript" in ctype and len(body) > 10_000
    runs = json.loads(get("api/runs")[2])
    listed = {r["run"]: r for r in runs["runs"]}
    assert set(expected_events()) <= set(listed)
    # the demo's runs have ended, so their incidents are resolved: count incidents
    assert listed["demo-clean"]["alerts"] == 0 and listed["demo-spike"]["alerts"] > 0
    assert listed["demo-spike"]["open_alerts"] == 0
    view = json.loads(get("api/run/demo-spike")[2])
    loss = next(p for p in view["training"] if p["metric"] == "loss")
    # the spike's incident, or the loss finding that joined it (a marker on its own panel)
    assert loss["band"] and any(a["step"] == 300 and a["metric"] == "loss"
                                for a in [*view["alerts"], *view["markers"].values()])
    assert {h["family"] for h in view["internals"]} >= {"grad_norm", "act_mean"}
    try:
        urllib.request.urlopen(base + "api/run/no-such-run", timeout=30)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and "no run" in json.loads(exc.read())["error"]
    # a name re-pointed at 127.0.0.1 (DNS rebinding) does not reach the worker's dashboard
    for path in ("", "api/runs", "api/run/demo-spike", "static/app.js"):
        req = urllib.request.Request(base + path,
                                     headers={"Host": f"rebind.example:{cfg.web_port}"})
        try:
            urllib.request.urlopen(req, timeout=30)
            raise AssertionError(f"{path}: expected 421 for a foreign Host")
        except urllib.error.HTTPError as exc:
            assert exc.code == 421 and b"unexpected Host header" in exc.read()

    # the page itself, in headless Chromium: runs listed from InfluxDB, no console errors
    from telltale.ui.browser import console_errors, headless_chrome

    d = headless_chrome()
    try:
        d.get(base + "#demo-spike")
        rows = wait_for(lambda: d.find_elements("css selector", "tr.run-row"), timeout=20,
                        what="runs listed")
        assert {r.get_attribute("data-run") for r in rows} >= set(expected_events())
        wait_for(lambda: d.find_elements(
            "css selector", "#panel-train-loss .alert-marker[data-step='300']"), timeout=20,
            what="the spike's marker on the loss chart")
        assert console_errors(d) == []
    finally:
        d.quit()

    # a report from InfluxDB
    out = tmp_path / "spike.html"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "telltale", "report", "demo-spike", "--out",
                           str(out)], env=config_env(cfg), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    spike = next(a for a in [*view["alerts"], *view["markers"].values()]
                 if a["step"] == 300 and a["metric"] == "loss")
    assert "TELLTALE_REPORT" in html and json.dumps(spike["message"])[1:-1] in html
    print(f"report from InfluxDB in {time.perf_counter() - t0:.1f} s")
