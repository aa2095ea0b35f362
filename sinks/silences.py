"""Silences: matchers with an expiry that suppress matching alerts while active.

Two stores with the same ``list``/``add``/``remove``: :class:`FileSilences` (a JSON file,
embedded mode) and :class:`KafkaSilences` (the compacted topic ``<prefix>.silences``: key =
silence id, value = the silence as JSON, an empty value removes it; read by every
notifier).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from telltale.config import Config
from telltale.private import makedirs, open_private
from telltale.schema import dumps
from telltale.sinks.kafka import create_topics
from telltale.sinks.routes import SEVERITIES, glob, severity_at_least

log = logging.getLogger("telltale.notify")


@dataclass
class Silence:
    """Suppresses matching alerts until ``until`` (Unix seconds)."""

    id: str
    until: float
    run: str | None = None
    metric: str | None = None
    detector: str | None = None
    severity: str | None = None  # silences alerts at or below this severity
    comment: str = ""
    created: float = field(default_factory=time.time)

    def active(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.until

    def matches(self, a: dict, now: float | None = None) -> bool:
        if not self.active(now):
            return False
        if self.severity and severity_at_least(a, self.severity) and \
                a.get("severity") != self.severity:
            return False
        return (glob(a.get("run"), self.run) and glob(a.get("metric"), self.metric)
                and glob(a.get("detector"), self.detector))

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> Silence:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` (or plain seconds) → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            v = float(t[:-1]) * units[t[-1]]
        else:
            v = float(t)
    except ValueError:
        raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 2h, 1d") from None
    if v <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return v


class FileSilences:
    """Silences in a JSON file (embedded mode): ``{"silences": [...]}``."""

    def __init__(self, path: str):
        self.path = path

    def list(self) -> list[Silence]:
        try:
            with open(self.path) as f:
                doc = json.load(f)
        except FileNotFoundError:
            return []
        except ValueError as exc:
            log.warning("ignoring unreadable silences file %s: %s", self.path, exc)
            return []
        return [Silence.from_dict(d) for d in doc.get("silences", [])]

    def _write(self, items: Sequence[Silence]) -> None:
        makedirs(os.path.dirname(os.path.abspath(self.path)))
        tmp = self.path + ".tmp"
        with open_private(tmp, "w") as f:
            json.dump({"silences": [s.to_dict() for s in items]}, f, indent=1)
        os.replace(tmp, self.path)

    def add(self, s: Silence) -> None:
        self._write([x for x in self.list() if x.id != s.id and x.active()] + [s])

    def remove(self, sid: str) -> bool:
        items = self.list()
        keep = [x for x in items if x.id != sid]
        self._write(keep)
        return len(keep) != len(items)



def new_silence(duration: str, comment: str = "", **matchers) -> Silence:
    """A silence for ``duration`` (``15m``, ``2h``...) with at least one matcher."""
    if not any(matchers.values()):
        raise ValueError("a silence needs at least one matcher (--run, --metric, --detector "
                         "or --severity)")
    if matchers.get("severity") and matchers["severity"] not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}")
    return Silence(id=uuid.uuid4().hex[:10], until=time.time() + parse_duration(duration),
                   comment=comment, **matchers)


def silences_topic(cfg: Config) -> str:
    """The compacted topic that holds the silences: ``<prefix>.silences``."""
    return f"{cfg.topic_prefix}.silences"


class KafkaSilences:
    """Silences kept on a compacted Kafka topic; ``list`` re-reads it at most every
    ``refresh`` seconds."""

    def __init__(self, cfg: Config, refresh: float = 2.0):
        self.cfg, self.topic, self.refresh = cfg, silences_topic(cfg), refresh
        self._cache: list[Silence] = []
        self._at = -1e9
        self._producer: Any = None  # a kafka-python KafkaProducer once something is sent

    def ensure_topic(self) -> None:
        """Create the compacted topic if it is missing (one partition)."""
        from kafka.admin import NewTopic

        create_topics(self.cfg, [NewTopic(self.topic, 1, 1, topic_configs={
            "cleanup.policy": "compact"})])  # AccessError (a ConnectionError) says why not

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
