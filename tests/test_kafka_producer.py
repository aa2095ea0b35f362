"""The producer library against the real Kafka: a trainer that just exits loses nothing."""

import json
import subprocess
import sys

import pytest
from conftest import config_env
from kafka import KafkaConsumer

from telltale.streams.topics import ensure_topics

pytestmark = pytest.mark.services

TRAINER = """
import telltale
mon = telltale.init(run="exit-run", tags={"model": "mlp"})
for i in range(1, 301):
    mon.log({"loss": 1.0 / i, "acc": i / 300}, step=i)
# no close(): flushed at interpreter exit
"""


def test_events_are_flushed_at_exit_with_an_end_marker(kafka_config):
    cfg = kafka_config
    ensure_topics(cfg)
    proc = subprocess.run([sys.executable, "-c", TRAINER], env=config_env(cfg),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    consumer = KafkaConsumer(cfg.metrics_topic, bootstrap_servers=cfg.kafka,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    msgs = list(consumer)
    consumer.close()
    assert {m.key for m in msgs} == {b"exit-run"}  # keyed by run id
    events = [e for m in msgs for e in json.loads(m.value)["events"]]
    assert [e["step"] for e in events if e["kind"] == "train"] == list(range(1, 301))
    assert events[-1]["kind"] == "end"
    assert events[0]["tags"] == {"model": "mlp"}
    assert len(msgs) < 300  # batched, not one message per event
