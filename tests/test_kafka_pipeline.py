"""Kafka → Faust worker → InfluxDB and the alert topic, against the real services."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from kafka import KafkaProducer

from telltale.config import Config
from telltale.producers import KafkaTransport, Monitor
from telltale.schema import encode_batch
from telltale.simulate import DEMO_RUNS, SimRun, simulate
from telltale.streams.embedded import EmbeddedPipeline
from tests.support import wait_for
from tests.support.influx import influxql, run_points
from tests.support.kafka import TopicReader
from tests.support.services import config_env

pytestmark = pytest.mark.services

RUNS = [SimRun("e2e-clean", None, None, seed=11), SimRun("e2e-spike", "spike", 300, seed=12),
        SimRun("e2e-nan", "nan", 420, seed=13)]


def sim_events(sim: SimRun, t0: float):
    return [(s, ts, k, m) for s, ts, k, m in simulate(sim, t0=t0)]


def flux_count(cfg: Config, run: str) -> int:
    q = (f'from(bucket:"{cfg.influx_bucket}") |> range(start: -30d, stop: 1h) '
         f'|> filter(fn: (r) => r._measurement == "metrics" and r._field == "step" '
         f'and r.run == "{run}") |> group() |> count()')
    from influxdb_client import InfluxDBClient

    with InfluxDBClient(url=cfg.influx_url, token=cfg.influx_token, org=cfg.influx_org) as c:
        tables = c.query_api().query(q)
    return sum(rec.get_value() for t in tables for rec in t.records)


def embedded_alerts(cfg: Config, batches: list[tuple[str, bytes]]) -> list[dict]:
    pipe = EmbeddedPipeline(cfg)
    alerts = []
    for run, payload in batches:
        alerts += pipe.handle(run, payload).alerts
    alerts += pipe.close().alerts
    return alerts


def test_three_runs_end_to_end(kafka_config, start_worker):
    cfg = kafka_config
    worker = start_worker(cfg)
    worker.wait_ready()
    alerts = TopicReader(cfg, cfg.alerts_topic)
    t0 = time.time() - 700 * 0.05
    data = {r.run: sim_events(r, t0) for r in RUNS}
    mons = {r.run: Monitor(r.run, KafkaTransport(cfg.kafka, cfg.metrics_topic), linger=0.01)
            for r in RUNS}

    def log_until(step_excl):
        for run, evs in data.items():
            while evs and evs[0][0] < step_excl:
                s, ts, k, m = evs.pop(0)
                mons[run].log(m, step=s, kind=k, ts=ts)
        for m in mons.values():
            assert m.flush(30)

    log_until(300)
    wait_for(lambda: worker.status().get("runs", {}).get("e2e-spike", 0) >= 299 + 14,
             what="worker to process the first 299 steps")
    # the spike: logged now, must be on the alert topic within 2 s
    s, ts, k, m = data["e2e-spike"].pop(0)
    assert s == 300
    t_log = time.time()
    mons["e2e-spike"].log(m, step=s, kind=k, ts=ts)
    got = wait_for(lambda: [t for t, a in alerts.records
                            if a["run"] == "e2e-spike" and a["step"] == 300], timeout=10,
                   what="the spike alert")
    latency = got[0] - t_log
    print(f"spike alert latency from log() to the alert topic: {latency * 1000:.0f} ms")
    assert latency < 2.0, f"spike alert took {latency:.2f}s"
    log_until(10**9)
    for mon in mons.values():
        mon.close()

    n_events = {r.run: len(sim_events(r, t0)) for r in RUNS}
    for run, n in n_events.items():
        wait_for(lambda run=run, n=n: run_points(cfg, run) == n, timeout=30,
                 what=f"{n} events of {run} in InfluxDB")
        assert flux_count(cfg, run) == n  # Flux (influxdb-client) sees every event too

    # window statistics equal numpy's over the same events
    events = sim_events(RUNS[0], t0)
    steps = np.array([s for s, _, k, _ in events if k == "train"])
    loss = np.array([m["loss"] for _, _, k, m in events if k == "train"])
    q = ('SELECT "start","end","count","mean","std","min","max" FROM "window_stats" WHERE '
         '"run"=\'e2e-clean\' AND "metric"=\'loss\' AND "window"=\'step:100/50\'')

    def windows():
        series = influxql(cfg, q)
        return series[0]["values"] if series else []

    # hopping windows starting at -50, 0, ..., 600 (the last ones close with the run's end)
    rows = wait_for(lambda: len(windows()) == 14 and windows(), timeout=30,
                    what="14 hopping windows of e2e-clean")
    for _, start, end, count, mean, std, lo, hi in rows:
        x = loss[(steps >= start) & (steps < end)]
        assert count == len(x)
        assert np.allclose([mean, std, lo, hi], [x.mean(), x.std(), x.min(), x.max()],
                           rtol=1e-9)

    # the same alerts as the embedded pipeline on the same events
    wait_for(lambda: any(a["run"] == "e2e-nan" for a in alerts.values()), what="NaN alert")
    time.sleep(1.0)
    alerts.close()
    batches = [(r.run, encode_batch(r.run, [{"step": s, "ts": ts, "kind": k, "metrics": m}
                                            for s, ts, k, m in sim_events(r, t0)]
                                    + [{"step": 600, "ts": t0 + 100, "kind": "end",
                                        "metrics": {}}]))  # what Monitor.close() sends
               for r in RUNS]
    expected = embedded_alerts(cfg, batches)
    key = lambda a: (a["id"], a["step"], a["state"], a["metric"], a["rank"])  # noqa: E731
    assert sorted(alerts.values(), key=key) == sorted(expected, key=key)
    assert {a["run"] for a in expected} == {"e2e-spike", "e2e-nan"}
    assert worker.alive()

    # `telltale alerts` shows the same alerts, as JSON and pretty
    def tail(*flags):
        proc = subprocess.run([sys.executable, "-m", "telltale", "alerts", "--from-beginning",
                               "--timeout", "8", *flags], env=config_env(cfg),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    as_json = [json.loads(x) for x in tail("--json")]
    assert sorted(as_json, key=key) == sorted(expected, key=key)
    pretty = tail("--run", "e2e-spike")
    assert len(pretty) == sum(a["run"] == "e2e-spike" for a in expected)
    # one incident for the spike: its first finding pages, loss and the norms join it
    assert any(line.startswith("[WARNING ] FIRING e2e-spike step 300: ") for line in pretty)


def malformed_messages(n: int) -> list[bytes]:
    good = {"step": 1, "ts": time.time(), "metrics": {"loss": 1.0}}
    kinds = [
        lambda i: b"{not json " + str(i).encode(),
        lambda i: json.dumps([i]).encode(),
        lambda i: json.dumps({"schema": "telltale/99", "run": "bad", "events": [good]}).encode(),
        lambda i: json.dumps({"run": "bad", "step": -i - 1, "ts": 1, "metrics": {"x": 1}}).encode(),
        lambda i: json.dumps({"run": "bad", "step": i, "ts": 1, "metrics": {"x": "str"}}).encode(),
        lambda i: json.dumps({"run": "bad", "step": i, "ts": "yesterday",
                              "metrics": {"x": 1}}).encode(),
        lambda i: b'{"run": "bad", "pad": "' + b"x" * 1_100_000 + b'"}',
        lambda i: encode_batch("bad", [{"step": i, "ts": 1.0, "metrics": {"x": [1, 2]}}]),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def test_malformed_events_are_dead_lettered_and_the_worker_keeps_going(kafka_config,
                                                                        start_worker):
    cfg = kafka_config
    worker = start_worker(cfg)
    worker.wait_ready()
    dead = TopicReader(cfg, cfg.deadletter_topic)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka, max_request_size=4 * 1024 * 1024)
    good = [{"step": i, "ts": time.time() - 100 + i, "metrics": {"loss": 1.0 + 0.01 * i}}
            for i in range(1, 51)]
    prod.send(cfg.metrics_topic, key=b"good-run", value=encode_batch("good-run", good[:25]))
    for i, raw in enumerate(malformed_messages(1000)):
        prod.send(cfg.metrics_topic, key=f"bad-{i % 7}".encode(), value=raw)
    prod.send(cfg.metrics_topic, key=b"good-run", value=encode_batch("good-run", good[25:]))
    prod.flush()
    prod.close()
    wait_for(lambda: len(dead.records) >= 1000, timeout=60, what="1000 dead letters")
    time.sleep(0.5)
    dead.close()
    recs = dead.values()
    assert len(recs) == 1000
    assert all(r["reason"] and "raw" in r for r in recs)
    reasons = " ".join(r["reason"] for r in recs)
    for part in ("not valid JSON", "must be a JSON object", "unknown schema", "step must be",
                 "must be a number", "ts must be", "bytes (max", "got list"):
        assert part in reasons
    assert worker.alive()
    wait_for(lambda: run_points(cfg, "good-run") == 50, what="the good run's 50 events")


def test_two_workers_own_disjoint_runs_and_match_one_worker(kafka_config, start_worker,
                                                           tmp_path):
    from dataclasses import replace

    runs = [SimRun(f"own-{i}", r.fault, r.onset, steps=300, seed=20 + i)
            for i, r in enumerate(DEMO_RUNS * 2)]
    t0 = time.time() - 400 * 0.05

    def publish(cfg):
        mons = [Monitor(r.run, KafkaTransport(cfg.kafka, cfg.metrics_topic)) for r in runs]
        for mon, r in zip(mons, runs, strict=True):
            for s, ts, k, m in simulate(r, t0=t0):
                mon.log(m, step=s, kind=k, ts=ts)
        for mon in mons:
            mon.close(30)
        return {r.run: len(list(simulate(r, t0=t0))) for r in runs}

    def results(cfg):
        rows = influxql(cfg, 'SELECT "count","mean","std" FROM "window_stats" GROUP BY *')
        return sorted((json.dumps(s["tags"], sort_keys=True), s["values"]) for s in rows)

    one = kafka_config
    two = replace(one, topic_prefix=one.topic_prefix + "-b", app_id=one.app_id + "-b",
                  influx_db=one.influx_db + "_b")
    w = start_worker(one, "single")
    w.wait_ready()
    a, b = start_worker(two, "a"), start_worker(two, "b")
    a.wait_ready()
    b.wait_ready()
    wait_for(lambda: sorted(a.status()["assigned"] + b.status()["assigned"]) == [0, 1, 2, 3]
             and a.status()["assigned"] and b.status()["assigned"], timeout=60,
             what="the two workers to split the 4 partitions")
    readers = {id(c): TopicReader(c, c.alerts_topic) for c in (one, two)}
    for cfg in (one, two):
        counts = publish(cfg)
        for run, n in counts.items():
            wait_for(lambda run=run, n=n, cfg=cfg: run_points(cfg, run) == n, timeout=60,
                     what=f"{run} in InfluxDB")
    time.sleep(1.0)  # last status files
    owned_a, owned_b = set(a.status()["runs"]), set(b.status()["runs"])
    assert owned_a and owned_b and not owned_a & owned_b
    assert owned_a | owned_b == {r.run for r in runs}
    assert all(a.status()["runs"].get(r, 0) + b.status()["runs"].get(r, 0) == n + 1
               for r, n in counts.items())  # + the end-of-run marker
    r1, r2 = results(one), results(two)
    assert [k for k, _ in r1] == [k for k, _ in r2]  # same series and windows ...
    for (_, v1), (_, v2) in zip(r1, r2, strict=True):  # ... and values (up to float order)
        assert np.array(v1).shape == np.array(v2).shape
        assert np.allclose(np.array(v1, float), np.array(v2, float), rtol=1e-9, atol=1e-12)
    for r in readers.values():
        r.close()
    strip = lambda recs: sorted(json.dumps(x, sort_keys=True) for x in recs)  # noqa: E731
    assert strip(readers[id(one)].values()) == strip(readers[id(two)].values())
    assert readers[id(one)].values()
