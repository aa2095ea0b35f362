"""In-memory store: the embedded pipeline's output kept per run (a report from an events
file, the tests)."""

from __future__ import annotations

from collections import defaultdict

from telltale.records import Point


class MemoryStore:
    """Points per run and measurement (as ``Point.to_dict()``), alert records per run and
    dead-letter records, in memory."""

    def __init__(self) -> None:
        self.points: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        self.alerts: dict[str, list[dict]] = defaultdict(list)
        self.deadletters: list[dict] = []

    def write_points(self, points: list[Point]) -> None:
        for p in points:
            self.points[p.tags["run"]][p.measurement].append(p.to_dict())

    def write_alerts(self, alerts: list[dict]) -> None:
        for a in alerts:
            self.alerts[a["run"]].append(a)

    def write_deadletters(self, records: list[dict]) -> None:
        self.deadletters.extend(records)

    def flush(self) -> None:
        pass
