"""Where delivery (sinks/delivery.py) meets a transport.

- :func:`run_notify`: the ``telltale notify`` service. Consumes the alert topic as a Kafka
  consumer group, collects each burst for ``group_wait`` seconds, delivers it and commits
  the offsets only afterwards (at-least-once; a restarted notifier redelivers what it had
  not committed, with the same idempotency keys).
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
from telltale.sinks.delivery import Notifier, NotifyConfig
from telltale.sinks.kafka import close_quietly, reconnect
from telltale.sinks.silences import KafkaSilences
from telltale.sinks.store import Store

log = logging.getLogger("telltale.notify")


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
                close_quietly(consumer, autocommit=False)
                consumer = reconnect(connect, wait=stop.wait) or consumer  # None: stopping
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

    def __init__(self, ncfg: NotifyConfig, silences, store: Store | None = None,
                 maxsize: int = 10_000):
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
