"""A local append-only spool of encoded batches, for when the broker is away.

One file per (run, rank) under a directory: ``<run>.<rank>.spool`` holds one encoded
batch per line (``<number of events> <payload>``); ``<run>.<rank>.spool.offset`` holds
the byte offset of the first batch not yet delivered. Batches keep their events'
original timestamps and are replayed in the order they were written; a spool left by a
crashed trainer is replayed by the next monitor of the same run and rank. Delivery is at
least once: a crash between a send and the offset update sends that one batch again.

Spool files are created 0600 in a 0700 directory (they hold what the trainer logged).

The file is bounded (``max_bytes``): a batch that does not fit is dropped and counted
(``dropped_events``), never silently.
"""

from __future__ import annotations

import fcntl
import os
import re

from telltale.private import makedirs, open_private

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def spool_name(run: str, rank: str = "0") -> str:
    """A file-name-safe, collision-resistant name for one run and rank."""
    import hashlib

    safe = _SAFE.sub("_", run)[:80]
    if safe != run:  # two runs that differ only in unsafe characters must not share a file
        safe += "-" + hashlib.sha256(run.encode()).hexdigest()[:8]
    return f"{safe}.{_SAFE.sub('_', str(rank))[:16]}.spool"


class Spool:
    """Append batches, read them back in order, advance past delivered ones."""

    def __init__(self, directory: str, run: str, rank: str = "0",
                 max_bytes: int = 512 * 1024 * 1024):
        makedirs(directory)
        self.max_bytes = max_bytes
        self.dropped_events = 0
        self.spooled_events = 0
        self.corrupt_lines = 0
        self.last_error: str | None = None
        base = os.path.join(directory, spool_name(run, rank))
        self._lock = open_private(base + ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another live process of the same run and rank: use a file of its own
            self._lock.close()
            base = f"{base}.{os.getpid()}"
            self._lock = open_private(base + ".lock", "a")
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path, self._offset_path = base, base + ".offset"
        self._f = open_private(self.path, "ab")
        self._size = self._f.seek(0, os.SEEK_END)
        self._offset = self._read_offset()
        if self._offset > self._size:  # a stale offset file: replay everything there is
            self._offset = 0

    def _read_offset(self) -> int:
        try:
            with open(self._offset_path) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    @property
    def pending_bytes(self) -> int:
        return self._size - self._offset

    def __bool__(self) -> bool:
        return self._size > self._offset

    def append(self, payload: bytes, n_events: int) -> bool:
        """Write one encoded batch (a single line); False (and counted) when full."""
        if self.pending_bytes + len(payload) + 1 > self.max_bytes:
            self.dropped_events += n_events
            return False
        line = b"%d " % n_events + payload + b"\n"
        try:
            self._f.write(line)
            self._f.flush()
        except OSError as exc:  # e.g. disk full: counted like a full spool
            self.dropped_events += n_events
            self.last_error = f"cannot write the spool {self.path}: {exc}"
            return False
        self._size += len(line)
        self.spooled_events += n_events
        return True

    def peek(self) -> tuple[int, bytes, int] | None:
        """The oldest undelivered batch as (events, payload, line length), or None."""
        while self:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    line = f.readline()
            except OSError as exc:  # the file went away under us: nothing left to replay
                self._size = self._offset = 0
                self.last_error = f"spool {self.path} is unreadable: {exc}"
                return None
            head, _, payload = line.partition(b" ")
            if line.endswith(b"\n") and head.isdigit():
                return int(head), payload[:-1], len(line)
            # a torn line from a crash (or garbage): skip it, counted
            self.corrupt_lines += 1
            self._move_to(self._offset + (len(line) or self._size - self._offset))
        return None

    def advance(self, line_len: int) -> None:
        """Mark the batch returned by :meth:`peek` as delivered."""
        self._move_to(self._offset + line_len)

    def _move_to(self, offset: int) -> None:
        self._offset = offset
        if self._offset >= self._size:  # all delivered: start the file afresh
            self._f.truncate(0)
            self._f.seek(0)
            self._size = self._offset = 0
        self._save_offset()

    def _save_offset(self) -> None:
        tmp = self._offset_path + ".tmp"
        with open_private(tmp, "w") as f:
            f.write(str(self._offset))
        os.replace(tmp, self._offset_path)

    def close(self) -> None:
        """Close the file; an empty spool leaves nothing behind."""
        empty = not self
        self._f.close()
        if empty:
            for p in (self.path, self._offset_path, self.path + ".lock"):
                try:
                    os.remove(p)
                except OSError:
                    pass
        self._lock.close()


def pending_spools(directory: str) -> list[dict]:
    """Spool files with undelivered batches: path, run, rank, events, bytes."""
    import json

    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".spool"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path + ".offset") as f:
                offset = int(f.read().strip() or 0)
        except (OSError, ValueError):
            offset = 0
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                events, first, size = 0, None, 0
                for line in f:
                    head, _, payload = line.partition(b" ")
                    if head.isdigit() and line.endswith(b"\n"):
                        events += int(head)
                        size += len(line)
                        first = first or payload
        except OSError:
            continue
        if not first:
            continue
        try:
            run = json.loads(first)["run"]
        except (ValueError, KeyError, TypeError):
            continue
        rank = name[:-len(".spool")].rsplit(".", 1)[-1]
        out.append({"path": path, "run": run, "rank": rank, "events": events, "bytes": size})
    return out
