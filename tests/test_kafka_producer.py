"""The producer library against the real Kafka: a trainer that just exits loses nothing."""

import json
import subprocess
import sys

import pytest
from kafka import KafkaConsumer

from telltale.streams.topics import ensure_topics
from tests.support.services import config_env

pytestmark = pytest.mark.services

TRAINER = """
import telltale
mon = telltale.init(run="exit-run", tags={"model": "mlp"})
for i in range(1, 301):
    mon.log({"loss": 1.0 / i, "acc": i / 300}, step=i)
# no close(): flushed at interpreter exit
"""


def test_events_are_flushed_at_exit_with_an_end_marker(kafka_config, tmp_path):
    cfg = kafka_config
    ensure_topics(cfg)
    env = {**config_env(cfg), "TELLTALE_SPOOL_DIR": str(tmp_path / "spool")}
    proc = subprocess.run([sys.executable, "-c", TRAINER], env=env,
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
    assert list((tmp_path / "spool").iterdir()) == []  # delivered: no spool left behind


def test_spool_of_a_dead_trainer_is_listed_and_sent_by_the_cli(kafka_config, tmp_path):
    from telltale.producers import Monitor
    from telltale.producers.spool import Spool
    from tests.support.transports import SwitchableTransport

    cfg = kafka_config
    ensure_topics(cfg)
    mon = Monitor("spooled-run", SwitchableTransport(down=True), linger=0.001,
                  retry_backoff=0.01, spool=Spool(str(tmp_path), "spooled-run", "2"))
    for i in range(1, 201):
        mon.log({"loss": 1.0 / i}, step=i, ts=1000.0 + i)
    mon.close(timeout=0.5)  # the broker never came back
    cli = [sys.executable, "-m", "telltale", "spool", "--dir", str(tmp_path)]
    listing = subprocess.run(cli, env=config_env(cfg), capture_output=True, text=True,
                             timeout=60)
    assert "spooled-run" in listing.stdout and "201 events" in listing.stdout
    sent = subprocess.run(cli + ["--send"], env=config_env(cfg), capture_output=True,
                          text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    consumer = KafkaConsumer(cfg.metrics_topic, bootstrap_servers=cfg.kafka,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    events = [e for m in consumer for e in json.loads(m.value)["events"]]
    consumer.close()
    assert [(e["kind"], e["step"]) for e in events] == \
        [("train", i) for i in range(1, 201)] + [("end", 200)]
    assert [e["ts"] for e in events[:200]] == [1000.0 + i for i in range(1, 201)]
    again = subprocess.run(cli, env=config_env(cfg), capture_output=True, text=True, timeout=60)
    assert "no undelivered events" in again.stdout
