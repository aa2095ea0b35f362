"""Poison and hostile input against the real worker: dead-lettered with a reason, memory
bounded, good events flow on."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import pytest
from conftest import wait_for
from kafka import KafkaProducer
from test_kafka_pipeline import TopicReader, _influx_count

from telltale.schema import encode_batch

pytestmark = pytest.mark.services


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


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
    wait_for(lambda: _influx_count(cfg, "good") == len(good), timeout=120,
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
