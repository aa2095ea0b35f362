"""A broker outage must not block the trainer; events are kept and delivered afterwards."""

import json
import subprocess
import time

import pytest
from conftest import ROOT
from kafka import KafkaConsumer

from telltale.producers import KafkaTransport, Monitor
from telltale.streams.topics import ensure_topics

pytestmark = pytest.mark.services


def services(cmd: str, *args: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), cmd, *args], check=True,
                   capture_output=True, timeout=180)


def test_events_logged_while_the_broker_is_down_arrive_after_it_returns(kafka_config):
    cfg = kafka_config
    ensure_topics(cfg)
    mon = Monitor("outage-run", KafkaTransport(cfg.kafka, cfg.metrics_topic), linger=0.01,
                  retry_backoff=0.1, max_backoff=1.0)
    mon.log({"loss": 0.0}, step=0)
    assert mon.flush(30)
    services("stop-kafka")
    try:
        worst = 0.0
        for i in range(1, 2001):  # the trainer keeps going while the broker is away
            t = time.perf_counter()
            mon.log({"loss": float(i)}, step=i)
            worst = max(worst, time.perf_counter() - t)
        time.sleep(2.0)
        assert mon.stats()["queued"] > 0  # kept, not dropped
    finally:
        services("start-kafka", "--keep-data")
    assert mon.flush(90), mon.stats()
    mon.close()
    assert mon.stats()["dropped"] == 0
    consumer = KafkaConsumer(cfg.metrics_topic, bootstrap_servers=cfg.kafka,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    steps = [e["step"] for msg in consumer for e in json.loads(msg.value)["events"]
             if e["kind"] == "train"]
    consumer.close()
    assert steps == list(range(0, 2001))  # all of them, in order, none twice
    assert worst < 0.05, f"log() took {worst * 1000:.1f} ms during the outage"
