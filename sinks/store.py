"""The contract every store of the embedded pipeline meets (``streams/embedded.py``).

Stores: :class:`~telltale.sinks.local.LocalStore` (JSON lines in a folder, the embedded
default) and :class:`~telltale.sinks.memory.MemoryStore` (in memory, for a report from an
events file). The Kafka worker writes to InfluxDB through
:class:`~telltale.sinks.buffer.DurablePointBuffer` and
:class:`~telltale.sinks.influx.AsyncInfluxSink` instead (asynchronous, batched).
"""

from __future__ import annotations

from typing import Protocol

from telltale.records import Point


class Store(Protocol):
    """Takes a pipeline's output: points, alert records and rejected input."""

    def write_points(self, points: list[Point]) -> None:
        """Keep the points (``metrics``, ``window_stats``, ``scores``, ``alerts``)."""

    def write_alerts(self, alerts: list[dict]) -> None:
        """Keep the alert records (schema ``telltale.alert/2``)."""

    def write_deadletters(self, records: list[dict]) -> None:
        """Keep rejected input, each with its reason (:class:`telltale.schema.Rejected`)."""

    def flush(self) -> None:
        """Make what was written so far visible to readers."""
