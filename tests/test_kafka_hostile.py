"""Poison and hostile input against the real worker: dead-lettered with a reason, memory
bounded, good events flow on."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest
from kafka import KafkaProducer

from telltale.schema import encode_batch
from tests.support import wait_for
from tests.support.influx import influxql, run_points
from tests.support.kafka import TopicReader
from tests.support.workers import rss_mb

pytestmark = pytest.mark.services


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """One seeded mutation of a valid message: flips, cuts, splices, type and value swaps."""
    b = bytearray(raw)
    op = rng.randrange(8)
    if op == 0:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:
        b = b[:rng.randrange(len(b))]
    elif op == 2:
        i = rng.randrange(len(b))
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    elif op == 3:
        return raw.replace(b'"step":', b'"step":NaN,"x":', 1)
    elif op == 4:
        return raw.replace(b'"ts":', b'"ts":Infinity,"y":', 1)
    elif op == 5:
        return raw.replace(b'"metrics":{', b'"metrics":{"a":[1],', 1)
    elif op == 6:
        return raw.replace(b'telltale/1', rng.choice([b"telltale/2", b"", b"x" * 300]), 1)
    else:
        return raw.replace(b'"run":"', b'"run":' + rng.choice([b"1,", b"null,", b"{},"]) + b'"', 1)
    return bytes(b)


def test_fuzzed_and_hostile_input_is_dead_lettered_and_memory_stays_bounded(kafka_config,
                                                                            start_worker):
    cfg = replace(kafka_config, max_active_runs=2000, max_series_per_run=500)
    w = start_worker(cfg)
    w.wait_ready()
    dead = TopicReader(cfg, cfg.deadletter_topic)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka, max_request_size=4 << 20, linger_ms=20)
    t0 = time.time() - 3600
    good = [{"step": i, "ts": t0 + i, "metrics": {"loss": 1 + 0.01 * (i % 7)}}
            for i in range(1, 2001)]

    def send_good(i):  # the good run, interleaved with everything else
        prod.send(cfg.metrics_topic, key=b"good", value=encode_batch("good", good[i:i + 100]))

    base_rss = None
    rng = random.Random(7)
    valid = encode_batch("fuzz", [{"step": 1, "ts": t0, "kind": "train",
                                   "metrics": {"loss": 1.0, "acc": 0.5}, "tags": {"rank": 0}}])
    fuzzed = 3000
    for i in range(fuzzed):
        prod.send(cfg.metrics_topic, key=b"fuzz-%d" % (i % 13), value=mutate(rng, valid))
        if i % 300 == 0:
            send_good(i // 300 * 100)
    huge = b'{"run":"x","pad":"' + b"y" * 1_500_000 + b'"}'
    prod.send(cfg.metrics_topic, key=b"huge", value=huge)
    # one run with 5,000 ranks: its series past max_series_per_run are refused
    wide = [{"step": 1, "ts": t0, "metrics": {"loss": 1.0}, "tags": {"rank": r}}
            for r in range(5000)]
    prod.send(cfg.metrics_topic, key=b"wide", value=encode_batch("wide", wide))
    # 10k distinct runs from one producer: past max_active_runs they are refused, with a reason
    for i in range(10_000):
        prod.send(cfg.metrics_topic, key=b"r%d" % i,
                  value=encode_batch(f"hostile-{i}", [{"step": 1, "ts": t0, "metrics": {"x": 1.0},
                                                        "tags": {"host": f"h{i}"}}]))
        if i == 1000:
            prod.flush()
            base_rss = rss_mb(w.proc.pid)
    for i in range(10, 20):
        send_good(i * 100)
    prod.flush()
    prod.close()
    wait_for(lambda: run_points(cfg, "good") == len(good), timeout=120,
             what="every event of the good run in InfluxDB")
    wait_for(lambda: sum("active runs" in r["reason"] for r in dead.values()) >= 8000,
             timeout=120, what="the runs past the limit dead-lettered")
    time.sleep(2)
    dead.close()
    recs = dead.values()
    reasons = [r["reason"] for r in recs]
    assert all(r and isinstance(r, str) for r in reasons)
    assert any("TELLTALE_MAX_SERIES_PER_RUN" in r for r in reasons)
    assert any("bytes (max" in r for r in reasons)
    assert any("unknown schema" in r for r in reasons)
    assert any("ts must be" in r or "not valid JSON" in r for r in reasons)
    refused_runs = sum("TELLTALE_MAX_ACTIVE_RUNS" in r for r in reasons)
    assert 8000 - 50 <= refused_runs <= 10_000 - 2000 + 50  # the first ~2000 runs were taken
    assert w.alive()
    st = w.status()
    grown = rss_mb(w.proc.pid) - base_rss
    print(f"\n{len(recs)} dead letters ({refused_runs} refused runs), worker RSS grew "
          f"{grown:.0f} MB after the first 1000 hostile runs; cached runs "
          f"{st['cached_runs']}, messages {st['messages']}")
    assert grown < 300


def _q(s: str) -> str:
    """An InfluxQL string literal (accepted names have no backslash)."""
    return "'" + s.replace("'", "\\'") + "'"


def _series(cfg, run: str) -> list[dict]:
    """The run's raw points: [{time, field...}] (epoch ns)."""
    rows = influxql(cfg, f'SELECT * FROM "metrics" WHERE "run" = {_q(run)}')
    return [{c: v for c, v in zip(s["columns"], row, strict=True) if v is not None}
            for s in rows for row in s["values"]]


# text -> (why it is refused as a metric name, why as a tag value); None: stored exactly
HOSTILE_NAMES = {
    "a\nb": ("control character", "control character"),
    "a\rb": ("control character", "control character"),
    "a\tb": ("control character", "control character"),
    "a\\b": ("backslash", "backslash"), "a\ud800b": ("surrogate", "surrogate"),
    "": ("non-empty", None),  # an empty tag value is no tag
    "time": ("reserved", None), "x" * 200: ("characters long", None),
    "a b": (None, None), "a,b": (None, None), "a=b": (None, None), 'a"b': (None, None),
    "λ😀ü": (None, None), "'quoted'": (None, None),
}


def test_hostile_names_numbers_and_times_through_the_real_services(kafka_config, start_worker):
    """Every hostile input is stored exactly or dead-lettered with its reason; the worker
    stays up, clean runs sent after each are complete in InfluxDB, nothing is spilled."""
    cfg = kafka_config
    w = start_worker(cfg)
    w.wait_ready()
    dead = TopicReader(cfg, cfg.deadletter_topic)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka, max_request_size=4 << 20, linger_ms=5)
    t0 = time.time() - 3600
    good_runs = []

    def send(run: str, events: list[dict]) -> None:
        prod.send(cfg.metrics_topic, key=run.encode("utf-8", "surrogatepass"),
                  value=encode_batch(run, events))

    def send_good() -> None:  # a clean run after each hostile input: it must be complete
        run = f"good-{len(good_runs)}"
        good_runs.append(run)
        send(run, [{"step": s, "ts": t0 + s, "metrics": {"loss": 1.0 + 0.01 * (s % 7)}}
                   for s in range(1, 101)])

    for i, name in enumerate(HOSTILE_NAMES):
        send(f"metric-{i}", [{"step": 1, "ts": t0, "metrics": {name: 1.0, "ok": 2.0}}])
        send(f"tag-{i}", [{"step": 1, "ts": t0, "metrics": {"ok": 2.0}, "tags": {"host": name}}])
        send(f"rank-{i}", [{"step": 1, "ts": t0, "metrics": {"ok": 2.0}, "tags": {"rank": name}}])
        send(f"run {name}", [{"step": 1, "ts": t0, "metrics": {"ok": 2.0}}])
        send_good()
    limits = [1e308, -1e308, 5e-324, -0.0]
    send("limits", [{"step": s + 1, "ts": t0 + s, "metrics": {"v": v}}
                    for s, v in enumerate(limits)])
    send("times", [{"step": 1, "ts": 0.0, "metrics": {"v": 1.0}},  # 1970
                   {"step": 2, "ts": 4102444800.0, "metrics": {"v": 2.0}},  # 2100
                   {"step": 3, "ts": 1e10, "metrics": {"v": 3.0}}])  # 2286: refused
    send_good()
    send("steps", [{"step": s, "ts": t0 + i, "metrics": {"v": float(i)}}  # dup, backwards
                   for i, s in enumerate([5, 5, 6, 3, 2, 7])])
    send("r" * 1024, [{"step": 1, "ts": t0, "metrics": {"v": 1.0}}])
    send("wide", [{"step": 1, "ts": t0, "metrics": {f"m{j}": 1.0 for j in range(10_000)}}])
    send_good()
    prod.flush()
    for run in good_runs:
        wait_for(lambda run=run: run_points(cfg, run) == 100, timeout=60,
                 what=f"every point of {run} in InfluxDB")
    wait_for(lambda: len(_series(cfg, "steps")) == 6, timeout=30, what="the steps run")
    time.sleep(1.5)
    written = w.status()["influx"]["written"]
    send_good()
    prod.flush()
    prod.close()
    wait_for(lambda: run_points(cfg, good_runs[-1]) == 100, timeout=60, what="last good run")
    dead.close()
    reasons: dict = {}  # run -> reasons
    for r in dead.values():
        reasons.setdefault(r.get("run"), []).append(r["reason"])
    assert all(r for rs in reasons.values() for r in rs)
    for i, (name, (as_metric, as_tag)) in enumerate(HOSTILE_NAMES.items()):
        if as_metric:
            assert any(as_metric in r for r in reasons[f"metric-{i}"]), (name, reasons)
        else:  # stored exactly as sent
            assert f"metric-{i}" not in reasons
            assert _series(cfg, f"metric-{i}")[0][name] == 1.0
        for slot in ("tag", "rank"):
            if as_tag:
                assert any(as_tag in r for r in reasons[f"{slot}-{i}"]), (name, reasons)
            else:
                assert f"{slot}-{i}" not in reasons
        if name and not as_tag:
            tags = influxql(cfg, f'SHOW TAG VALUES FROM "metrics" WITH KEY = "host" '
                                 f'WHERE "run" = {_q(f"tag-{i}")}')
            assert tags[0]["values"] == [["host", name]]
        run = f"run {name}"
        if not as_tag and len(run) <= 128:
            assert _series(cfg, run)[0]["ok"] == 2.0
        else:  # the whole message is refused: its run id is not one
            why = (f"run {run[:80]!r} ", as_tag) if as_tag else (f"run is {len(run)} ", "")
            assert any(why[0] in r and why[1] in r for r in reasons[None]), (why, reasons)
    assert [p["v"] for p in _series(cfg, "limits")] == limits  # -0.0 == 0.0
    times = _series(cfg, "times")
    assert [p["time"] for p in times] == [0, 4102444800 * 10**9]
    assert any("between 1677 and 2262" in r for r in reasons["times"])
    assert [p["step"] for p in _series(cfg, "steps")] == [5, 5, 6, 3, 2, 7]  # in time order
    assert any("1024 characters long" in r for r in reasons[None])
    assert any("10000 metrics in one event" in r for r in reasons["wide"])
    assert w.alive()
    wait_for(lambda: w.status()["influx"]["written"] > written, timeout=10,
             what="the written count growing")
    st = w.status()["influx"]
    assert st["spilled"] == 0 and st["spill_files"] == 0 and st["alarm"] is None


def test_points_influxdb_refuses_are_dead_lettered_not_spilled(kafka_config, start_worker):
    """Before: a 400 from InfluxDB was taken for an outage: every point spilled, the spill
    re-sent on each flush and refused again, `written` stuck at 0."""
    import urllib.request

    cfg = kafka_config
    w = start_worker(cfg)
    w.wait_ready()
    t0 = time.time() - 3600
    # `conflict` is a string field in this shard: InfluxDB refuses it as a float
    body = f'metrics,run=earlier conflict="text" {int(t0 * 1e9)}'.encode()
    urllib.request.urlopen(urllib.request.Request(
        f"{cfg.influx_url}/write?db={cfg.influx_db}", data=body, method="POST"), timeout=10)
    dead = TopicReader(cfg, cfg.deadletter_topic)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka, linger_ms=5)
    for i in range(3):
        prod.send(cfg.metrics_topic, key=b"mixed", value=encode_batch("mixed", [
            {"step": i * 10 + s, "ts": t0 + i * 10 + s,
             "metrics": {"loss": 1.0, **({"conflict": 1.0} if s == 5 else {})}}
            for s in range(10)]))
    for r in range(3):
        prod.send(cfg.metrics_topic, key=b"after-%d" % r, value=encode_batch(f"after-{r}", [
            {"step": s, "ts": t0 + s, "metrics": {"loss": 1.0}} for s in range(1, 201)]))
    prod.flush()
    prod.close()
    for r in range(3):
        wait_for(lambda r=r: run_points(cfg, f"after-{r}") == 200, timeout=60,
                 what=f"run after-{r} complete in InfluxDB")
    wait_for(lambda: run_points(cfg, "mixed") == 27, timeout=30,
             what="the accepted points of the mixed run")
    refused = wait_for(lambda: [r for r in dead.values() if "InfluxDB refused" in r["reason"]]
                       if len(dead.values()) >= 3 else None, timeout=30,
                       what="the refused points dead-lettered")
    dead.close()
    assert len(refused) == 3
    assert all("field type conflict" in r["reason"] and "conflict=1.0" in r["raw"]
               for r in refused)
    # runs are checkpointed as they are processed: the file may show the refusals first
    st = wait_for(lambda: (s := w.status()["influx"])["refused"] == 3
                  and s["written"] > 600 and s, timeout=10,
                  what="the refused and written counts in worker-status.json")
    assert st["spilled"] == 0 and st["spill_files"] == 0
    assert "field type conflict" in st["last_refusal"]
