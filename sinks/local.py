"""Local store for the embedded default: JSON lines per measurement in a folder."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import IO

from telltale.private import makedirs, open_private
from telltale.records import Point


class LocalStore:
    """Appends points to ``DIR/<measurement>.jsonl``, alerts to ``DIR/alerts.log.jsonl``
    and rejected input to ``DIR/deadletter.jsonl`` (files 0600, a new folder 0700)."""

    def __init__(self, directory: str):
        self.directory = directory
        makedirs(directory)
        self._files: dict[str, IO[str]] = {}
        self.counts: Counter = Counter()

    def _file(self, name: str) -> IO[str]:
        f = self._files.get(name)
        if f is None:
            path = os.path.join(self.directory, f"{name}.jsonl")
            f = self._files[name] = open_private(path)
        return f

    def write_points(self, points: list[Point]) -> None:
        for p in points:
            self._file(p.measurement).write(json.dumps(p.to_dict(), separators=(",", ":")) + "\n")
            self.counts[p.measurement] += 1

    def write_alerts(self, alerts: list[dict]) -> None:
        f = self._file("alerts.log")
        for a in alerts:
            f.write(json.dumps(a, separators=(",", ":")) + "\n")

    def write_deadletters(self, records: list[dict]) -> None:
        f = self._file("deadletter")
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
        self.counts["deadletter"] += len(records)

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
