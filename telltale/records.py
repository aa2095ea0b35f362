"""What the pipeline produces: time-series points and alerts (transport-neutral)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from math import isfinite

ALERT_SCHEMA = "telltale.alert/2"


@dataclass(slots=True)
class Point:
    """One InfluxDB-style point: measurement, tags, fields, time in ns."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str]
    time_ns: int

    def to_dict(self) -> dict:
        return {"measurement": self.measurement, "tags": self.tags, "fields": self.fields,
                "time": self.time_ns}


@dataclass(slots=True)
class PointBlock:
    """Points of one series (same measurement and tags) as columns: float fields, a point
    leaving out its non-finite ones, plus ``step``; built without a Point per row."""

    measurement: str
    tags: dict[str, str]
    names: list[str]
    columns: list[list[float]]
    steps: list[int]
    times_ns: list[int]

    def __len__(self) -> int:
        return len(self.times_ns)

    def points(self) -> list[Point]:
        pts = []
        for i, t in enumerate(self.times_ns):
            fields = {n: c[i] for n, c in zip(self.names, self.columns, strict=True)
                      if isfinite(c[i])}
            fields["step"] = self.steps[i]
            pts.append(Point(self.measurement, self.tags, fields, t))
        return pts


def alert_id(run: str, metric: str, rank: str, detector: str, step: int) -> str:
    """Deterministic incident id: ``step`` is the step the incident started at, so a replay
    or the embedded mode gives the same id, and every record of one incident shares it."""
    key = f"{run}\x1f{metric}\x1f{rank}\x1f{detector}\x1f{step}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def to_ns(ts: float) -> int:
    return int(round(ts * 1e9))


def record_key(a: dict) -> str:
    """Identity of one alert record: ``<id>:<state>:<step>`` (also the idempotency key)."""
    return f"{a.get('id')}:{a.get('state', 'firing')}:{a.get('step')}"


class Deduper:
    """Remembers the last ``size`` record keys: after a worker crash some alert records are
    sent again (identical, same key); consumers use this to show and deliver each once."""

    def __init__(self, size: int = 100_000):
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first(self, a: dict) -> bool:
        k = record_key(a)
        if k in self._seen:
            self._seen.move_to_end(k)
            self.duplicates += 1
            return False
        self._seen[k] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True
