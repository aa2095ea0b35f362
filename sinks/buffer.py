"""A durable buffer between the worker and InfluxDB: memory first, disk when InfluxDB is down.

Points wait in memory (as line protocol) until the next flush. A flush writes any spilled
files first (oldest first), then the memory batch. When InfluxDB cannot take them, the
memory batch is appended to a spill file and fsynced, so it is durable and the worker can
acknowledge the input it came from; the spill is written to InfluxDB, in order, when it is
back, also after a restart of the worker. Past ``max_spill_bytes`` the flush reports
:class:`Backpressure` and the caller stops acknowledging input: Kafka keeps the rest.

Writes are idempotent in InfluxDB (same measurement, tags and timestamp overwrite), so a
batch written twice after a crash leaves no duplicates.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from telltale.records import Point, PointBlock
from telltale.sinks.influx import block_lines, to_line

log = logging.getLogger("telltale.worker")


class Backpressure(RuntimeError):
    """InfluxDB is down and the spill is full: stop taking input until it drains."""


class DurablePointBuffer:
    def __init__(self, spill_dir: str | os.PathLike, max_spill_bytes: int = 1 << 30,
                 file_bytes: int = 16 << 20):
        self.dir = Path(spill_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_spill_bytes, self.file_bytes = max_spill_bytes, file_bytes
        self.lines: list[str] = []
        self.written = 0  # lines written to InfluxDB
        self.spilled = 0  # lines that went through the disk
        self.failures = 0
        self.last_error: str | None = None
        self._seq = int(time.time() * 1000)

    def add(self, points: list[Point], blocks: list[PointBlock] = ()) -> None:
        self.lines.extend(to_line(p) for p in points)
        for b in blocks:
            self.lines.extend(block_lines(b))

    def __len__(self) -> int:
        return len(self.lines)

    def spill_files(self) -> list[Path]:
        return sorted(self.dir.glob("spill-*.lp"))

    def spill_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.spill_files())

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
                    await write(batch)
                    self.written += len(batch)
                    return True
                except Exception as exc:  # InfluxDB down, slow or refusing
                    self._failed(exc)
            try:
                self._spill(batch)
            except Backpressure:
                self.lines[:0] = batch  # keep them; the caller must not ack
                raise
            return False
        return ok

    async def _drain_spill(self, write) -> bool:
        for path in self.spill_files():
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                self._failed(exc)
                return False
            try:
                for i in range(0, len(lines), 5000):
                    await write(lines[i:i + 5000])
            except Exception as exc:
                self._failed(exc)
                return False
            self.written += len(lines)
            path.unlink()
            log.warning("InfluxDB is back: wrote %d spilled points from %s", len(lines),
                        path.name)
        return True

    def _spill(self, lines: list[str]) -> None:
        if self.spill_bytes() >= self.max_spill_bytes:
            raise Backpressure(f"InfluxDB unreachable ({self.last_error}) and the spill in "
                               f"{self.dir} is full ({self.max_spill_bytes} bytes)")
        files = self.spill_files()
        path = files[-1] if files and files[-1].stat().st_size < self.file_bytes else None
        if path is None:
            self._seq += 1
            path = self.dir / f"spill-{self._seq:016d}.lp"
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.spilled += len(lines)
        log.warning("InfluxDB unreachable (%s): spilled %d points to %s", self.last_error,
                    len(lines), path)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:300]
