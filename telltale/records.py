"""What the pipeline produces: time-series points and alerts (transport-neutral)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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


def alert_id(run: str, metric: str, rank: str, detector: str, step: int) -> str:
    """Deterministic incident id: ``step`` is the step the incident started at, so a replay
    or the embedded mode gives the same id, and every record of one incident shares it."""
    key = f"{run}\x1f{metric}\x1f{rank}\x1f{detector}\x1f{step}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def to_ns(ts: float) -> int:
    return int(round(ts * 1e9))
