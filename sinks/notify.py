"""Where the delivery core (sinks/handlers.py) meets a transport.

- :func:`run_notify`: the ``telltale notify`` service. Consumes the alert topic as a Kafka
  consumer group, collects each burst for ``group_wait`` seconds, delivers it and commits
  the offsets only afterwards (at-least-once; a restarted notifier redelivers what it had
  not committed, with the same idempotency keys).
- :class:`KafkaSilences`: silences on the compacted topic ``<prefix>.silences`` (key =
  silence id, value = the silence as JSON, an empty value removes it), read by every
  notifier.
- :class:`BackgroundNotifier`: the embedded mode's notifier, a thread fed by a bounded
  queue so the trainer never waits for a webhook.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable

from telltale.config import Config
from telltale.records import Deduper
from telltale.schema import Rejected, dumps
from telltale.sinks.handlers import Notifier, NotifyConfig, Silence

log = logging.getLogger("telltale.notify")


def silences_topic(cfg: Config) -> str:
    return f"{cfg.topic_prefix}.silences"


class KafkaSilences:
    """Silences kept on a compacted Kafka topic; ``list`` re-reads it at most every
    ``refresh`` seconds."""

    def __init__(self, cfg: Config, refresh: float = 2.0):
        self.cfg, self.topic, self.refresh = cfg, silences_topic(cfg), refresh
        self._cache: list[Silence] = []
        self._at = -1e9
        self._producer = None

    def ensure_topic(self) -> None:
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        from telltale.access import kafka_admin

        admin = kafka_admin(self.cfg)  # AccessError (a ConnectionError) says why not
        try:
            if self.topic not in set(admin.list_topics()):
                admin.create_topics([NewTopic(self.topic, 1, 1, topic_configs={
                    "cleanup.policy": "compact"})])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def _read_all(self) -> list[Silence]:
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=self.cfg.kafka, enable_auto_commit=False,
                          **self.cfg.kafka_options())
        try:
            parts = c.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in parts]
            if not tps:
                return []
            c.assign(tps)
            c.seek_to_beginning(*tps)
            end = c.end_offsets(tps)
            found: dict[str, dict | None] = {}
            deadline = time.monotonic() + 10
            while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
                for msgs in c.poll(timeout_ms=200).values():
                    for m in msgs:
                        k = m.key.decode() if m.key else None
                        if k is None:
                            continue
                        try:
                            found[k] = json.loads(m.value) if m.value else None
                        except ValueError:
                            log.warning("ignoring unreadable silence %r", k)
            return [Silence.from_dict(d) for d in found.values() if d]
        finally:
            c.close()

    def read(self) -> list[Silence]:
        """The silences on the topic now; Kafka errors (ACLs, no broker) are raised."""
        from kafka.errors import KafkaError

        try:
            return self._read_all()
        except KafkaError:
            raise
        except Exception as exc:  # kafka-python wraps some refusals in plain errors
            raise ConnectionError(f"could not read {self.topic} on {self.cfg.kafka}: "
                                  f"{exc}") from None

    def list(self) -> list[Silence]:
        now = time.monotonic()
        if now - self._at >= self.refresh:
            try:
                self._cache = self._read_all()
                self._at = now
            except Exception as exc:  # keep the last known silences
                log.warning("could not read silences from %s: %s", self.topic, exc)
        return list(self._cache)

    def _send(self, key: str, value: bytes | None) -> None:
        from kafka import KafkaProducer

        self.ensure_topic()
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self.cfg.kafka,
                                           **self.cfg.kafka_options())
        self._producer.send(self.topic, key=key.encode(), value=value).get(timeout=30)
        self._at = -1e9

    def add(self, s: Silence) -> None:
        self._send(s.id, dumps(s.to_dict()).encode())

    def remove(self, sid: str) -> bool:
        known = any(s.id == sid for s in self._read_all())
        if known:
            self._send(sid, None)
        return known

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


def _max_retry_seconds(n: NotifyConfig) -> float:
    total, d = 0.0, n.backoff_initial
    for _ in range(max(n.max_attempts - 1, 0)):
        total += d
        d = min(d * 2, n.backoff_max)
    return total


def run_notify(cfg: Config, ncfg: NotifyConfig, group: str, from_beginning: bool = False,
               idle_exit: float | None = None, echo: Callable[[str], None] = print) -> dict:
    """Consume the alert topic and deliver; returns the counts when stopped (SIGTERM/SIGINT,
    or ``idle_exit`` seconds without alerts)."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import CommitFailedError, KafkaError

    def connect():
        return KafkaConsumer(
            cfg.alerts_topic, bootstrap_servers=cfg.kafka, group_id=group,
            enable_auto_commit=False, **cfg.kafka_options(),
            auto_offset_reset="earliest" if from_beginning else "latest",
            max_poll_interval_ms=int(max(300.0, 2 * _max_retry_seconds(ncfg) + 60) * 1000))

    from telltale.access import check_kafka

    check_kafka(cfg)  # a wrong password or certificate: a clear error now, not a hang
    try:
        consumer = connect()
        producer = KafkaProducer(bootstrap_servers=cfg.kafka, **cfg.kafka_options())
    except KafkaError:
        raise ConnectionError(f"no Kafka broker answers at {cfg.kafka}; check TELLTALE_KAFKA")\
            from None
    silences = KafkaSilences(cfg)

    def dead_letter(alert: dict, reason: str) -> None:
        producer.send(cfg.deadletter_topic, key=str(alert.get("run", "")).encode(),
                      value=dumps(Rejected(reason, dumps(alert)).to_dict()).encode())

    stop = threading.Event()
    notifier = Notifier(ncfg, silences.list, dead_letter, sleep=stop.wait, stopping=stop.is_set)
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    batch: list[dict] = []
    dedup = Deduper()
    first = last_seen = time.monotonic()
    try:
        while not stop.is_set():
            try:
                polled = consumer.poll(timeout_ms=200, max_records=500)
            except KafkaError as exc:  # the broker went away: reconnect and resume the group
                echo(f"notify: lost the broker ({type(exc).__name__}); reconnecting")
                try:
                    consumer.close(autocommit=False)
                except Exception:  # a consumer without a broker may fail to close
                    pass
                while not stop.wait(1.0):
                    try:
                        consumer = connect()
                        break
                    except KafkaError:
                        continue
                batch = []  # uncommitted: the group hands these to us again (deduped)
                dedup = Deduper()
                continue
            for msgs in polled.values():
                for m in msgs:
                    try:
                        a = json.loads(m.value)
                        if not isinstance(a, dict):
                            raise ValueError("not a JSON object")
                    except ValueError as exc:
                        dead_letter({"raw": m.value.decode("utf-8", "replace")},
                                    f"notify: unreadable alert record: {exc}")
                        continue
                    if not dedup.first(a):
                        continue  # the same record again (a worker crashed and replayed)
                    if not batch:
                        first = time.monotonic()
                    batch.append(a)
            now = time.monotonic()
            if batch and now - first >= ncfg.group_wait:
                if not notifier.deliver(batch):
                    echo(f"notify: stopping with {len(batch)} alert(s) undelivered; they are "
                         "not committed and will be delivered by the next notifier")
                    break
                producer.flush()
                try:
                    consumer.commit()
                except CommitFailedError as exc:  # rebalanced: the new owner redelivers
                    log.warning("offset commit failed (%s); these alerts may be redelivered",
                                exc)
                runs = len({a.get("run") for a in batch})
                c = notifier.counts
                echo(f"notify: {len(batch)} alert(s) of {runs} run(s) handled; totals: "
                     f"{c['delivered']} delivered, {c['silenced']} silenced, "
                     f"{c['dead_lettered']} dead-lettered, {c['retries']} retries")
                batch = []
                last_seen = now
            elif batch:
                last_seen = now
            if idle_exit is not None and not batch and now - last_seen > idle_exit:
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        consumer.close(autocommit=False)
        producer.close()
        silences.close()
    return notifier.counts


class BackgroundNotifier:
    """Embedded mode: delivers alerts on a thread; ``submit`` never blocks the caller
    (alerts beyond ``maxsize`` waiting are counted and written to the dead-letter file)."""

    def __init__(self, ncfg: NotifyConfig, silences, store=None, maxsize: int = 10_000):
        self.store = store
        self.notifier = Notifier(ncfg, silences.list, self._dead_letter)
        self.group_wait = ncfg.group_wait
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        self.thread = threading.Thread(target=self._loop, name="telltale-notify", daemon=True)
        self.thread.start()

    def _dead_letter(self, alert: dict, reason: str) -> None:
        if self.store is not None:
            self.store.write_deadletters([Rejected(reason, dumps(alert)).to_dict()])

    def submit(self, alert: dict) -> None:
        try:
            self.q.put_nowait(alert)
        except queue.Full:
            self.dropped += 1
            self._dead_letter(alert, "notify: embedded notifier queue full")

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            batch, deadline = [item], time.monotonic() + self.group_wait
            stop = False
            while (left := deadline - time.monotonic()) > 0:
                try:
                    nxt = self.q.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self.notifier.deliver(batch)
            if stop:
                return

    def close(self, timeout: float = 60.0) -> None:
        self.q.put(None)
        self.thread.join(timeout)
