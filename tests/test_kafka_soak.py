"""A short soak of the Kafka-mode worker (bench/soak.py runs the long one): runs start and
end all the time, memory stays bounded."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from telltale.schema import encode_batch
from telltale.simulate import RunMix
from tests.support import wait_for
from tests.support.workers import rss_mb

pytestmark = pytest.mark.services

EVENTS = 200_000
LIVE = 16


def test_worker_memory_stays_bounded_while_runs_start_and_end(kafka_config, start_worker):
    cfg = kafka_config
    w = start_worker(cfg)
    w.wait_ready()
    mix = RunMix(LIVE, 300, 900, seed=3)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka, linger_ms=5, max_request_size=4 << 20)
    sent = msgs = 0
    rss_mid = None
    try:
        while sent < EVENTS:
            run, evs, _ = mix.batch(msgs % LIVE, 500, 1.7e9)
            prod.send(cfg.metrics_topic, key=run.encode(), value=encode_batch(run, evs))
            sent += len(evs)
            msgs += 1
            if rss_mid is None and sent >= EVENTS // 4:  # warmed up: every detector has run
                prod.flush(60)
                n = msgs
                wait_for(lambda n=n: w.status().get("messages", 0) >= n, timeout=120,
                         what="the first quarter to be processed")
                rss_mid = rss_mb(w.proc.pid)
        prod.flush(60)
    finally:
        prod.close(10)
    assert mix.ended >= 200, "enough runs ended to show their state is released"
    wait_for(lambda: w.status().get("messages", 0) >= msgs
             and w.status().get("influx", {}).get("pending") == 0, timeout=180,
             what=f"all {msgs} messages processed and written")
    st = wait_for(lambda: (s := w.status()) and s["cached_runs"] <= LIVE and s, timeout=10,
                  what="ended runs to leave the cache")
    rss_end = rss_mb(w.proc.pid)
    print(f"\nworker RSS {rss_mid:.0f} MB after a quarter, {rss_end:.0f} MB at the end; {st}")
    assert sum(st["runs"].values()) == sent  # every event processed once
    assert st["skipped"] == 0
    # only the runs still live keep state, in memory and in the table
    assert st["cached_runs"] <= LIVE and st["table_runs"] <= LIVE, st
    assert len(st["runs"]) == mix.started - sum(1 for r in mix.live if r["step"] == 0)
    # ~150 runs came and went after the mid sample: their state must not pile up
    assert rss_end - rss_mid < 60, f"RSS grew from {rss_mid:.0f} MB to {rss_end:.0f} MB"
