"""A durable buffer between the worker and InfluxDB: memory first, disk when InfluxDB is down.

Points wait in memory (as line protocol) until the next flush. A flush writes any spilled
files first (oldest first), then the memory batch. When InfluxDB cannot take them, the
memory batch is appended to a spill file and fsynced, so it is durable and the worker can
acknowledge the input it came from; the spill is written to InfluxDB, in order, when it is
back, also after a restart of the worker. Past ``max_spill_bytes`` the flush reports
:class:`Backpressure` and the caller stops acknowledging input: Kafka keeps the rest.

Refused is not away: when InfluxDB refuses data (:class:`PointsRefused`: a line it cannot
parse, a field type conflict, a partial write), the batch is split until the lines it
refuses are found; those are handed to ``on_refused`` with InfluxDB's message (the worker
dead-letters them) and the rest is written. Only an outage (no answer, a timeout, 5xx,
401/403/404) spills. Replaying the spill does the same, so a refused line is never retried.

Writes are idempotent in InfluxDB (same measurement, tags and timestamp overwrite), so a
batch written twice after a crash (or while it is split) leaves no duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from telltale.records import Point, PointBlock
from telltale.sinks.influx import PointsRefused, block_lines, to_line

log = logging.getLogger("telltale.worker")

REQUEST_LINES = 10_000  # lines per write request (as the sink's batch)
SPILL_ALARM = 0.5  # status alarm past this share of max_spill_bytes
_DROPPED = re.compile(r"dropped=(\d+)")  # a partial write: how many points InfluxDB dropped


class Backpressure(RuntimeError):
    """InfluxDB is down and the spill is full: stop taking input until it drains."""


class DurablePointBuffer:
    """``on_refused(lines, message)`` takes the lines InfluxDB refused (may be async)."""

    def __init__(self, spill_dir: str | os.PathLike, max_spill_bytes: int = 1 << 30,
                 file_bytes: int = 16 << 20, on_refused=None):
        self.dir = Path(spill_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_spill_bytes, self.file_bytes = max_spill_bytes, file_bytes
        self.on_refused = on_refused
        self.lines: list[str] = []
        self.written = 0  # lines written to InfluxDB
        self.spilled = 0  # lines that went through the disk
        self.refused = 0  # lines InfluxDB refused (handed to on_refused)
        self.failures = 0
        self.last_error: str | None = None
        self.last_refusal: str | None = None
        self.backpressure = False  # the spill is full: input is not acknowledged
        self._seq = int(time.time() * 1000)
        self._spill_bytes = self._disk_bytes()

    def add(self, points: list[Point], blocks: Sequence[PointBlock] = ()) -> None:
        self.lines.extend(to_line(p) for p in points)
        for b in blocks:
            self.lines.extend(block_lines(b))

    def __len__(self) -> int:
        return len(self.lines)

    def spill_files(self) -> list[Path]:
        return sorted(self.dir.glob("spill-*.lp"))

    def _disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.spill_files())

    def spill_bytes(self) -> int:
        """Bytes in spill files (kept as they are written and removed)."""
        return self._spill_bytes

    def alarm(self) -> str | None:
        """What an operator must know about the spill, or None."""
        used = self._spill_bytes
        if self.backpressure:
            return (f"spill full ({used} of {self.max_spill_bytes} bytes) and InfluxDB "
                    f"unreachable ({self.last_error}): input is not acknowledged until it "
                    "drains; bring InfluxDB back or raise TELLTALE_SPILL_MAX_BYTES")
        if used >= SPILL_ALARM * self.max_spill_bytes:
            return (f"spill {used} of {self.max_spill_bytes} bytes "
                    f"({100 * used / self.max_spill_bytes:.0f}%) while InfluxDB is "
                    f"unreachable ({self.last_error}); past 100% the worker stops taking input")
        return None

    def status(self) -> dict:
        """Counters for worker-status.json."""
        return {"written": self.written, "spilled": self.spilled, "refused": self.refused,
                "spill_files": len(self.spill_files()), "spill_bytes": self._spill_bytes,
                "spill_max_bytes": self.max_spill_bytes, "backpressure": self.backpressure,
                "alarm": self.alarm(), "last_error": self.last_error,
                "last_refusal": self.last_refusal}

    def take(self) -> list[str]:
        """The buffered lines, handed over for :meth:`flush_lines` (the buffer restarts)."""
        batch, self.lines = self.lines, []
        return batch

    async def flush(self, write) -> bool:
        """Make every buffered line durable; True when all of it reached InfluxDB.

        ``write`` is ``async write(lines: list[str])`` raising on failure.
        """
        return await self.flush_lines(self.take(), write)

    async def flush_lines(self, batch: list[str], write) -> bool:
        """Make ``batch`` (from :meth:`take`) durable, after any spill; on
        :class:`Backpressure` the batch goes back in front of the buffer."""
        ok = await self._drain_spill(write)
        if batch:
            if ok:
                try:
                    await self._write(batch, write)
                    self.backpressure = False
                    return True
                except Exception as exc:  # InfluxDB down or slow
                    self._failed(exc)
            try:
                self._spill(batch)
            except Backpressure:
                self.backpressure = True
                self.lines[:0] = batch  # keep them; the caller must not ack
                raise
            self.backpressure = False
            return False
        return ok

    async def _write(self, lines: list[str], write) -> None:
        """Write ``lines``; what InfluxDB refuses goes to ``on_refused``. Raises on an outage
        (some lines may be written already: writes are idempotent)."""
        for i in range(0, len(lines), REQUEST_LINES):
            chunk = lines[i:i + REQUEST_LINES]
            refused: list[tuple[str, str]] = []
            await self._bisect(chunk, write, refused)
            self.written += len(chunk) - len(refused)
            by_reason: dict[str, list[str]] = {}
            for line, msg in refused:
                by_reason.setdefault(msg, []).append(line)
            for msg, bad in by_reason.items():
                self.refused += len(bad)
                self.last_refusal = msg[:300]
                log.warning("InfluxDB refused %d point(s): %s", len(bad), msg[:300])
                if self.on_refused is not None:
                    res = self.on_refused(bad, msg)
                    if hasattr(res, "__await__"):
                        await res

    async def _bisect(self, lines: list[str], write, refused: list) -> None:
        """Write ``lines``; split a refused write in halves until each refused line is
        found (log2(n) requests per refused line; none when InfluxDB says it dropped them all)."""
        try:
            await write(lines)
        except PointsRefused as exc:
            dropped = _DROPPED.search(exc.message)
            if len(lines) == 1 or (dropped and int(dropped.group(1)) >= len(lines)):
                refused.extend((line, exc.message) for line in lines)  # all of them
                return
            mid = len(lines) // 2
            await self._bisect(lines[:mid], write, refused)
            await self._bisect(lines[mid:], write, refused)

    async def _drain_spill(self, write) -> bool:
        for path in self.spill_files():
            try:
                lines = _read_spill(path)
            except (OSError, ValueError) as exc:
                self._failed(exc)
                return False
            try:  # refused lines go to on_refused: never retried
                await self._write(lines, write)
            except Exception as exc:
                self._failed(exc)
                return False
            size = path.stat().st_size
            path.unlink()
            self._spill_bytes = max(0, self._spill_bytes - size)
            log.warning("InfluxDB is back: wrote %d spilled points from %s", len(lines),
                        path.name)
        return True

    def _spill(self, lines: list[str]) -> None:
        if self._spill_bytes >= self.max_spill_bytes:
            raise Backpressure(f"InfluxDB unreachable ({self.last_error}) and the spill in "
                               f"{self.dir} is full ({self.max_spill_bytes} bytes)")
        files = self.spill_files()
        path = files[-1] if files and files[-1].stat().st_size < self.file_bytes else None
        if path is None:
            self._seq += 1
            path = self.dir / f"spill-{self._seq:016d}.lp"
        # one JSON string per line: a string field may hold a newline, and a line that
        # is not valid UTF-8 must still reach InfluxDB's refusal (then the dead letters)
        data = ("\n".join(map(json.dumps, lines)) + "\n").encode()
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._spill_bytes += len(data)
        self.spilled += len(lines)
        log.warning("InfluxDB unreachable (%s): spilled %d points to %s", self.last_error,
                    len(lines), path)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]


def _read_spill(path: Path) -> list[str]:
    """A spill file's lines (JSON strings; raw line protocol from earlier versions)."""
    return [json.loads(x) if x.startswith('"') else x
            for x in path.read_text().split("\n") if x]
