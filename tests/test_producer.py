import logging
import threading
import time

import pytest

from telltale.producers import Monitor
from telltale.schema import decode_message


class BlockingTransport:
    """Holds every send until released; records what it delivered."""

    def __init__(self):
        self.release = threading.Event()
        self.delivered = []

    def send(self, run, payload):
        self.release.wait()
        events, rejected = decode_message(payload)
        assert not rejected
        self.delivered += events

    def close(self):
        pass


class FlakyTransport(BlockingTransport):
    def __init__(self, failures):
        super().__init__()
        self.release.set()
        self.failures = failures

    def send(self, run, payload):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        super().send(run, payload)


def test_log_does_not_wait_for_a_stuck_transport():
    t = BlockingTransport()
    mon = Monitor("r", t, batch_size=10, linger=0.001)
    for i in range(2000):  # the sender is stuck in send(); log() must still return
        mon.log({"loss": 1.0 / (i + 1)}, step=i)
    assert mon.stats()["queued"] + 10 >= 2000 and t.delivered == []
    t.release.set()
    mon.close()
    steps = [e.step for e in t.delivered if e.kind != "end"]
    assert steps == list(range(2000))


def test_failed_batches_are_kept_and_delivered_later_in_order():
    t = FlakyTransport(failures=3)
    mon = Monitor("r", t, batch_size=50, linger=0.001, retry_backoff=0.01)
    for i in range(500):
        mon.log({"loss": float(i)}, step=i, tags={"rank": 1})
    assert mon.flush(timeout=10)
    mon.close()
    st = mon.stats()
    assert st["send_failures"] == 3 and st["dropped"] == 0
    train = [e for e in t.delivered if e.kind == "train"]
    assert [e.step for e in train] == list(range(500)) and train[0].tags == {"rank": "1"}
    assert t.delivered[-1].kind == "end"


def test_overflow_drops_oldest_counts_and_reports_it(caplog):
    t = BlockingTransport()
    mon = Monitor("r", t, max_queue=100, batch_size=1000, linger=0.001)
    for i in range(350):
        mon.log({"x": i}, step=i)
    assert mon.stats()["dropped"] >= 250 - 1000  # at least the overflow beyond the queue
    dropped = mon.stats()["dropped"]
    assert dropped > 0
    t.release.set()
    with caplog.at_level(logging.WARNING, logger="telltale"):
        mon.close()
    assert f"dropped {dropped} events because its queue (max 100) was full" in caplog.text
    steps = [e.step for e in t.delivered if e.kind == "train"]
    assert len(steps) == 350 - dropped and steps == sorted(steps) and steps[-1] == 349


def _log_to_a_lost_broker(transport, caplog) -> dict:
    """Log 1000 events to a transport whose broker is unreachable, wait for the sender's
    first failure (the trainer goes on meanwhile), close; the monitor's stats."""
    mon = Monitor("r", transport, batch_size=10, linger=0.001, retry_backoff=0.05)
    for i in range(1000):
        mon.log({"loss": 1.0}, step=i)
    for _ in range(200):
        if mon.stats()["send_failures"]:
            break
        time.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="telltale"):
        mon.close(timeout=1.0)
    return mon.stats()


def test_unreachable_broker_never_blocks_or_crashes_the_trainer(caplog):
    from telltale.producers import KafkaTransport

    t = KafkaTransport("127.0.0.1:1", "telltale.metrics", max_block_ms=200,
                       bootstrap_timeout_ms=300)
    st = _log_to_a_lost_broker(t, caplog)
    assert st["sent"] == 0 and st["queued"] == 1001 and st["send_failures"] >= 1
    assert "1001 events undelivered" in caplog.text and "not reachable" in caplog.text
    assert "dropped" not in caplog.text


def test_run_id_is_required():
    with pytest.raises(ValueError, match="run must be a non-empty string"):
        Monitor("", BlockingTransport())


def test_fast_encoding_matches_json_and_keeps_nan_and_infinities():
    import json
    import math

    from telltale.producers import client
    from telltale.producers.client import _encode_batch
    from telltale.schema import encode_batch

    assert client.orjson is not None, "the dev install includes telltale[fast] (orjson)"

    batches = [
        [{"step": i, "ts": 1.7e9 + i / 3, "kind": "train",
          "metrics": {"loss": 1 / (i + 3), "big": 1e300, "tiny": 5e-324, "n": 7},
          "tags": {"rank": "0", "model": "ü:null"}} for i in range(50)],
        [{"step": 1, "ts": 1.0, "kind": "train",
          "metrics": {"loss": math.nan, "g": math.inf, "h": -math.inf}}],
        [{"step": 2**70, "ts": 1.0, "kind": "train", "metrics": {"x": 1.0}}],
    ]
    for batch in batches:
        fast, plain = _encode_batch("r", batch), encode_batch("r", batch)
        assert repr(json.loads(fast)) == repr(json.loads(plain))  # repr: nan == nan
    nan_batch = json.loads(_encode_batch("r", batches[1]))["events"][0]["metrics"]
    assert math.isnan(nan_batch["loss"]) and nan_batch["g"] == math.inf


def test_kafka_client_choice(monkeypatch):
    from telltale.producers import ConfluentTransport, KafkaTransport, kafka_transport

    monkeypatch.delenv("TELLTALE_KAFKA_CLIENT", raising=False)
    assert type(kafka_transport("h:1", "t", security_protocol="PLAINTEXT")) is \
        ConfluentTransport  # the dev install has telltale[fast]
    sasl = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "u", "sasl_plain_password": "p"}
    assert type(kafka_transport("h:1", "t", **sasl)) is KafkaTransport
    monkeypatch.setenv("TELLTALE_KAFKA_CLIENT", "kafka-python")
    assert type(kafka_transport("h:1", "t")) is KafkaTransport
    monkeypatch.setenv("TELLTALE_KAFKA_CLIENT", "librdkafka")
    with pytest.raises(ValueError, match="TELLTALE_KAFKA_CLIENT='librdkafka' is not one of"):
        kafka_transport("h:1", "t")


def test_unreachable_broker_with_confluent_kafka_keeps_everything_and_says_why(caplog):
    from telltale.producers import ConfluentTransport

    st = _log_to_a_lost_broker(
        ConfluentTransport("127.0.0.1:1", "telltale.metrics", ack_timeout=0.5), caplog)
    assert st["sent"] == 0 and st["queued"] == 1001 and st["send_failures"] >= 1
    assert "1001 events undelivered" in caplog.text
    assert "Kafka at 127.0.0.1:1 is not reachable" in caplog.text
    assert "Connection refused" in st["last_error"]


class CountingTransport:
    """Counts batches and events; delivers nothing."""

    def __init__(self):
        self.batches = self.events = 0

    def send(self, run, payload):
        events, _ = decode_message(payload)
        self.batches += 1
        self.events += len(events)

    def close(self):
        pass


def test_a_busy_caller_gets_fewer_larger_batches():
    """At ~1 kHz the sender's wait grows towards max_linger (the embedded pipeline's cost
    is per batch); with max_linger=linger it stays at linger. Same run, relative counts."""
    sent = {}
    for name, max_linger in (("fixed", 0.02), ("adaptive", 0.5)):
        t = CountingTransport()
        mon = Monitor("busy", t, linger=0.02, max_linger=max_linger)
        nxt = time.perf_counter()
        for i in range(2000):
            mon.log({"loss": 1.0}, step=i)
            nxt += 0.001
            time.sleep(max(0.0, nxt - time.perf_counter()))
        mon.flush()
        sent[name] = t.batches
        mon.close(end=False)
        assert t.events == 2000
    assert sent["adaptive"] * 3 < sent["fixed"], sent
