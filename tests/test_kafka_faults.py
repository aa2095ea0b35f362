"""Faults the Kafka-mode worker survives, against the real Kafka and InfluxDB.

Each test publishes deterministic batches of simulated runs, breaks something mid-stream,
and compares what reached InfluxDB and the alert topic with the pure processor run over
the same events in one process (the reference): equal window statistics mean no window
lost its history, equal alerts mean no detector restarted cold, and every alert record is
seen once after de-duplication by record key (a replay may re-send identical records).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaProducer

from telltale.config import Config
from telltale.records import record_key
from telltale.schema import decode_message, encode_batch
from telltale.simulate import SimRun, simulate
from telltale.streams.processor import RunProcessor
from tests.support import wait_for
from tests.support.influx import influxql, run_points
from tests.support.kafka import TopicReader
from tests.support.services import config_env, services_sh

pytestmark = pytest.mark.services

RUNS = [SimRun("ft-clean", None, None, steps=900, seed=31),
        SimRun("ft-spike", "spike", 700, steps=900, seed=32),
        SimRun("ft-diverge", "divergence", 500, steps=900, seed=33),
        SimRun("ft-nan", "nan", 800, steps=900, seed=34)]


def batches(t0: float, size: int = 25) -> list[tuple[str, bytes]]:
    """(run, message) in publishing order: runs interleaved, `size` events a message."""
    per_run = {}
    for r in RUNS:
        evs = [{"step": s, "ts": ts, "kind": k, "metrics": m} for s, ts, k, m in simulate(r, t0)]
        msgs = [encode_batch(r.run, evs[i:i + size]) for i in range(0, len(evs), size)]
        msgs.append(encode_batch(r.run, [{"step": r.steps, "ts": t0 + 1e4, "kind": "end",
                                          "metrics": {}}]))
        per_run[r.run] = msgs
    out = []
    for i in range(max(len(m) for m in per_run.values())):
        for run, msgs in per_run.items():
            if i < len(msgs):
                out.append((run, msgs[i]))
    return out


def reference(cfg: Config, msgs) -> tuple[list[dict], dict]:
    """Alerts and window statistics of the pure processor over the same messages."""
    proc = RunProcessor(cfg)
    states, alerts, windows = {}, [], {}
    latest = {}  # InfluxDB keeps the last point of a series at a timestamp
    for run, payload in msgs:
        events, rejected = decode_message(payload)
        assert not rejected
        st = states.setdefault(run, proc.new_state(run))
        out = proc.process(st, events)
        alerts += out.alerts
        for p in out.points:
            if p.measurement == "window_stats":
                latest[(json.dumps(p.tags, sort_keys=True), p.time_ns)] = (
                    p.fields["first_step"], p.fields["count"], p.fields["mean"], p.fields["std"])
    for (key, _), row in latest.items():
        windows.setdefault(key, []).append(row)
    return alerts, {k: sorted(v) for k, v in windows.items()}


def influx_windows(cfg: Config) -> dict:
    rows = influxql(cfg, 'SELECT "first_step","count","mean","std" FROM "window_stats" '
                         'GROUP BY *')
    return {json.dumps(s["tags"], sort_keys=True): sorted(tuple(v[1:]) for v in s["values"])
            for s in rows}


def events_per_run(msgs) -> Counter:
    n = Counter()
    for run, payload in msgs:
        n[run] += sum(e.kind != "end" for e in decode_message(payload)[0])
    return n


def publish(cfg: Config, msgs) -> None:
    prod = KafkaProducer(bootstrap_servers=cfg.kafka, acks="all", linger_ms=5)
    for run, payload in msgs:
        prod.send(cfg.metrics_topic, key=run.encode(), value=payload)
    prod.flush(60)
    prod.close()


def wait_all_in_influx(cfg: Config, msgs, timeout: float = 120.0) -> None:
    for run, n in events_per_run(msgs).items():
        wait_for(lambda run=run, n=n: run_points(cfg, run) == n, timeout=timeout,
                 what=f"{n} events of {run} in InfluxDB")


def check_against_reference(cfg: Config, msgs, alert_records: list[dict]) -> None:
    ref_alerts, ref_windows = reference(cfg, msgs)
    # every window of every series, with the statistics of its whole history
    got = wait_for(lambda: (w := influx_windows(cfg)) and len(w) == len(ref_windows) and w,
                   timeout=30, what="window statistics")
    assert got.keys() == ref_windows.keys()
    for k, rows in ref_windows.items():
        assert len(got[k]) == len(rows), k
        assert np.allclose(np.array(got[k], float), np.array(rows, float), rtol=1e-9,
                           atol=1e-12), k
    # the same alert records; duplicates only of identical records
    by_key: dict[str, list[str]] = {}
    for a in alert_records:
        by_key.setdefault(record_key(a), []).append(json.dumps(a, sort_keys=True))
    assert all(len(set(v)) == 1 for v in by_key.values()), "a re-sent record differs"
    ref = {record_key(a): json.dumps(a, sort_keys=True) for a in ref_alerts}
    assert {k: v[0] for k, v in by_key.items()} == ref
    firing = Counter(a["id"] for a in {record_key(a): a for a in alert_records}.values()
                     if a["state"] == "firing")
    assert firing and max(firing.values()) == 1


def test_a_restarted_worker_keeps_the_idle_clock_of_its_runs(kafka_config, start_worker):
    """The idle clock lives in the run's state: a run idle before a restart is ended after
    the TTL since its last event, not after the TTL since the restart."""
    from dataclasses import replace

    cfg = replace(kafka_config, run_idle_ttl=12.0)
    run = RUNS[0].run
    msgs = [(r, m) for r, m in batches(time.time() - 3600) if r == run][:-1]  # no end
    w0 = start_worker(cfg, "w0")
    w0.wait_ready()
    publish(cfg, msgs)
    wait_for(lambda: w0.status().get("messages", 0) >= len(msgs)
             and w0.status().get("table_runs") == 1, timeout=60,
             what="the run processed and its state in the table")
    last_event = time.monotonic()
    w0.stop()
    time.sleep(max(0.0, cfg.run_idle_ttl + 1.0 - (time.monotonic() - last_event)))
    w1 = start_worker(cfg, "w1")  # the run is past its TTL when w1 starts
    w1.wait_ready()
    t0 = time.monotonic()
    wait_for(lambda: w1.status().get("expired_runs", 0) == 1, timeout=60,
             what="the idle run ended by the restarted worker")
    # the expiry check runs every TTL/4 = 3 s: well before a clock restarted by w1 (12 s)
    assert time.monotonic() - t0 < 8.0


def test_kill_9_mid_stream_then_restart_resumes_from_the_changelog(kafka_config, start_worker):
    cfg = kafka_config
    msgs = batches(time.time() - 3600)
    third = len(msgs) // 3
    alerts = TopicReader(cfg, cfg.alerts_topic)
    w0 = start_worker(cfg, "w0")
    w0.wait_ready()
    publish(cfg, msgs[:third])
    wait_for(lambda: w0.status().get("messages", 0) >= third
             and w0.status().get("checkpoints", 0) > 0, timeout=60,
             what="the first third processed")
    publish(cfg, msgs[third:2 * third])
    time.sleep(0.3)  # mid-way through the second third
    os.kill(w0.proc.pid, signal.SIGKILL)
    w0.proc.wait(10)
    publish(cfg, msgs[2 * third:])
    w1 = start_worker(cfg, "w1")
    w1.wait_ready()
    wait_all_in_influx(cfg, msgs)
    wait_for(lambda: w1.status().get("cached_runs", 1) == 0, timeout=30,
             what="every run ended and released")
    time.sleep(1.0)
    alerts.close()
    s0, s1 = w0.status(), w1.status()
    print(f"\nw0 before the kill: {s0}\nw1: {s1}")
    # it resumed: messages before the committed offset were not read again, and those read
    # again that the restored state already held were skipped
    assert s1["messages"] - s1["skipped"] < len(msgs)
    check_against_reference(cfg, msgs, alerts.values())


def test_a_second_worker_joins_then_leaves(kafka_config, start_worker):
    cfg = kafka_config
    msgs = batches(time.time() - 3600)
    third = len(msgs) // 3
    alerts = TopicReader(cfg, cfg.alerts_topic)
    a = start_worker(cfg, "a")
    a.wait_ready()
    publish(cfg, msgs[:third])
    b = start_worker(cfg, "b")
    b.wait_ready()
    wait_for(lambda: sorted(a.status()["assigned"] + b.status()["assigned"]) == [0, 1, 2, 3],
             timeout=60, what="the two workers to split the partitions")
    publish(cfg, msgs[third:2 * third])
    wait_for(lambda: b.status().get("messages", 0) > 0, timeout=30,
             what="the second worker to process messages")
    b.stop()  # leaves mid-stream: its partitions go back to a
    publish(cfg, msgs[2 * third:])
    try:
        wait_all_in_influx(cfg, msgs, timeout=45)
    except AssertionError as exc:
        counts = {r.run: run_points(cfg, r.run) for r in RUNS}
        raise AssertionError(f"{exc}\nin InfluxDB: {counts}\na: {a.status()}\nb: {b.status()}"
                             f"\n--- a:\n{a.log()[-3000:]}\n--- b:\n{b.log()[-3000:]}") from None
    time.sleep(1.0)
    alerts.close()
    assert b.status()["messages"] > 0, "the second worker took part"
    print(f"\na: {a.status()}\nb: {b.status()}")
    check_against_reference(cfg, msgs, alerts.values())


def test_broker_restart_mid_stream(kafka_config, start_worker):
    cfg = kafka_config
    msgs = batches(time.time() - 3600)
    half = len(msgs) // 2
    w = start_worker(cfg)
    w.wait_ready()
    # an alert consumer that lives through the restart (`telltale alerts`, a consumer group)
    n_alerts = len(reference(cfg, msgs)[0])
    tail = subprocess.Popen([sys.executable, "-m", "telltale", "alerts", "--json",
                             "--from-beginning", "--max", str(n_alerts)], env=config_env(cfg),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publish(cfg, msgs[:half])
    wait_for(lambda: w.status().get("messages", 0) >= half, timeout=60,
             what="the first half processed")
    services_sh("stop-kafka")
    try:
        time.sleep(10)
    finally:
        services_sh("start-kafka", "--keep-data")
    publish(cfg, msgs[half:])
    try:
        wait_all_in_influx(cfg, msgs, timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nworker status {w.status()}\n{w.log()[-4000:]}") from None
    assert w.alive(), w.log()[-3000:]
    try:
        out, err = tail.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        tail.kill()
        out, err = tail.communicate()
    tailed = [json.loads(x) for x in out.splitlines()]
    assert len(tailed) == n_alerts, err[-3000:]
    check_against_reference(cfg, msgs, tailed)
    reader = TopicReader(cfg, cfg.alerts_topic)  # and the topic itself holds them all
    time.sleep(3)
    reader.close()
    check_against_reference(cfg, msgs, reader.values())


def test_influxdb_down_for_60s_spills_and_catches_up(kafka_config, start_worker):
    cfg = kafka_config
    msgs = batches(time.time() - 3600)
    half = len(msgs) // 2
    alerts = TopicReader(cfg, cfg.alerts_topic)
    w = start_worker(cfg)
    w.wait_ready()
    publish(cfg, msgs[:half])
    wait_all_in_influx(cfg, msgs[:half])
    services_sh("stop-influx")
    try:
        publish(cfg, msgs[half:])
        wait_for(lambda: w.status().get("messages", 0) >= len(msgs), timeout=60,
                 what="every message processed while InfluxDB is down")
        spilled = wait_for(lambda: w.status()["influx"]["spilled"], timeout=30,
                           what="points spilled to disk")
        time.sleep(max(0.0, 60 - 5))
    finally:
        services_sh("start-influx", "--keep-data")
    wait_all_in_influx(cfg, msgs)
    wait_for(lambda: w.status()["influx"]["spill_files"] == 0, timeout=60,
             what="the spill written and removed")
    alerts.close()
    print(f"{spilled} points spilled while InfluxDB was down")
    assert w.alive()
    check_against_reference(cfg, msgs, alerts.values())


def test_a_run_that_stops_without_its_end_is_ended_after_the_idle_ttl(kafka_config,
                                                                       start_worker):
    """A trainer that dies sends no ``end``: after TELLTALE_RUN_IDLE_TTL without events the
    worker closes its windows, resolves its open incident and releases its state."""
    from dataclasses import replace

    cfg = replace(kafka_config, run_idle_ttl=4.0)
    nan_run = RUNS[3].run  # goes NaN at step 800: an incident open when it stops
    full = [(run, m) for run, m in batches(time.time() - 3600) if run == nan_run]
    msgs = full[:-1]  # without its end
    alerts = TopicReader(cfg, cfg.alerts_topic)
    w = start_worker(cfg, "idle")
    w.wait_ready()
    publish(cfg, msgs)
    wait_for(lambda: w.status().get("expired_runs", 0) == 1
             and w.status().get("table_runs", 1) == 0 and w.status().get("cached_runs") == 0,
             timeout=60, what="the idle run ended and released")
    wait_for(lambda: any(a["state"] == "resolved" and "no events for" in a["message"]
                         for a in alerts.values()), timeout=30, what="its incident resolved")
    alerts.close()
    firing = [a for a in alerts.values() if a["state"] == "firing"]
    assert firing and all(a["run"] == nan_run for a in firing)
    # its windows were closed, as an end would have closed them
    _, ref_windows = reference(cfg, full)
    got = wait_for(lambda: (w := influx_windows(cfg)) and len(w) == len(ref_windows) and w,
                   timeout=30, what="window statistics")
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in ref_windows.items()}
