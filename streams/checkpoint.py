"""Checkpoints: the worker's cache of run states and the commit of what input produced.

A checkpoint takes a snapshot under the lock (alert and dead-letter sends, buffered
points, changed run states, input events) and commits it in a background task, in this
order: alerts acked → points durable → changed states to the `run-state` table (its
changelog) → input acked. Input is acknowledged only after everything it produced is
durable, so Faust commits no offset past work that a crash could lose. The table is
written once per run per checkpoint, not once per event or message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from telltale.detectors.state import dump_state, load_state
from telltale.schema import dumps
from telltale.sinks.buffer import Backpressure, DurablePointBuffer
from telltale.sinks.influx import AsyncInfluxSink

log = logging.getLogger("telltale.worker")

CHECKPOINT_INTERVAL = 0.25  # seconds between checkpoints
CHECKPOINT_MESSAGES = 500  # or sooner, after this many messages
CHECKPOINT_POINTS = 20_000  # or this many points
IDLE_EVICT_S = 120.0  # runs idle this long leave the memory cache (the table keeps them)


def is_marker(blob: bytes | None) -> bool:
    """An ended run's small marker (not a run state)."""
    return blob is not None and len(blob) < 4096 and b'"ended_marker":true' in blob


class Checkpointer:
    """Per-run state cache, pending outputs and un-acknowledged input of one worker.

    One commit is in flight at a time; past 4× the checkpoint bounds the agent waits for it.
    """

    def __init__(self, table: Any, buffer: DurablePointBuffer, sink: AsyncInfluxSink | None):
        self.table, self.buffer, self.sink = table, buffer, sink
        self.cache: dict[str, dict] = {}  # run -> {"state", "dirty", "ver", "seen", "partition"}
        self.unacked: list = []  # Faust events processed, not acknowledged yet
        self.sends: list = []  # futures of alert / dead-letter sends since the last checkpoint
        self.lock = asyncio.Lock()
        self.closed = False
        self.inflight: asyncio.Future | None = None
        self.committing = 0  # points in commits not finished yet
        self.last = time.monotonic()
        self.counts: dict[str, float] = {"checkpoints": 0, "evicted": 0,
                                         "commit_wait_s": 0.0, "commit_max_s": 0.0}
        self.new_runs = 0  # runs started whose state is not in the table yet
        self.unsnapped_new = 0  # of those, started since the last snapshot
        self.markers = 0  # ended runs' markers in the table (recounted by streams/expiry.py)
        self.last_seen: dict[str, float] = {}  # run -> wall time of its last event here
        self.force = False  # snapshot even with no input pending (a run was expired)

    def state_for(self, run: str, partition: int, new_state: Callable[[str], dict]) -> dict:
        """The run's cache entry: from the cache, else from the table, else a new state."""
        ent = self.cache.get(run)
        if ent is None:
            saved = self.table.get(run.encode())
            state = load_state(saved) if saved else new_state(run)
            if state.get("ended_marker"):  # the run ended; its offsets still skip replays
                state = {**new_state(run), "offsets": state.get("offsets", {})}
            self.new_runs += saved is None  # until its state is in the table
            self.unsnapped_new += saved is None
            ent = self.cache[run] = {"state": state, "dirty": False, "ver": 0,
                                     "partition": partition}
        ent["seen"] = time.monotonic()
        return ent

    @staticmethod
    def changed(ent: dict) -> None:
        """A cached run state was modified: write it with the next checkpoint."""
        ent["dirty"] = True
        ent["ver"] += 1

    def due(self) -> bool:
        return (len(self.unacked) >= CHECKPOINT_MESSAGES or len(self.buffer) >= CHECKPOINT_POINTS
                or time.monotonic() - self.last >= CHECKPOINT_INTERVAL)

    def _over_bound(self) -> bool:
        return (len(self.unacked) >= 4 * CHECKPOINT_MESSAGES
                or len(self.buffer) >= 4 * CHECKPOINT_POINTS)

    async def checkpoint(self, wait: bool = False) -> None:
        """Start a commit of what is pending (``wait``: and wait until it is done); none
        after :meth:`close` (the sink is closed: nothing more may be acked)."""
        if self.closed:
            return
        if self.inflight is not None and not self.inflight.done():
            if not (wait or self._over_bound()):
                return  # the next checkpoint takes what piles up meanwhile
            t = time.monotonic()
            await self.wait_commit()
            self.counts["commit_wait_s"] += time.monotonic() - t
        async with self.lock:
            snap = self._snapshot()
            if snap is None:
                return
            # chained: commits finish in snapshot order even when two start close together
            self.inflight = asyncio.ensure_future(self._commit(self.inflight, *snap))
        if wait:
            await self.wait_commit()

    async def close(self) -> None:
        """The final checkpoint: commit what is pending, then take no more."""
        try:
            await self.checkpoint(wait=True)
        finally:
            self.closed = True

    async def wait_commit(self) -> None:
        task = self.inflight
        if task is not None:
            await asyncio.shield(task)

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: drop what this one cached for them."""
        for run in [r for r, e in self.cache.items() if e["partition"] in partitions]:
            del self.cache[run]
            self.last_seen.pop(run, None)
        self.unacked = [e for e in self.unacked if e.message.partition not in partitions]

    def _snapshot(self) -> tuple[list, list[str], list, list] | None:
        self.last = time.monotonic()
        if not (self.unacked or len(self.buffer) or self.force or self.buffer.spill_files()):
            return None
        self.force = False
        sends, self.sends = self.sends, []
        lines = self.buffer.take()
        now = time.monotonic()
        states: list = []  # (run, ver, JSON, ended?); last: the count of new runs
        for run, ent in list(self.cache.items()):
            if ent["dirty"]:
                st = ent["state"]
                if st.get("ended"):  # release the state, keep a small marker for replays
                    marker = {"run": run, "ended_marker": True, "ended_at": time.time(),
                              "offsets": st.get("offsets", {})}
                    states.append((run, ent["ver"], dumps(marker), True))
                else:
                    states.append((run, ent["ver"], dump_state(st), False))
            elif now - ent["seen"] > IDLE_EVICT_S:
                del self.cache[run]
                self.counts["evicted"] += 1
        events, self.unacked = self.unacked, []
        states.append(self.unsnapped_new)  # new runs this snapshot puts in the table
        self.unsnapped_new = 0
        return sends, lines, states, events

    async def _commit(self, prev: asyncio.Future | None, sends: list, lines: list[str],
                      states: list, events: list) -> None:
        if prev is not None:
            await asyncio.shield(prev)  # never raises: see below
        n = len(lines)
        self.committing += n
        t = time.monotonic()
        try:
            await self._commit_snapshot(sends, lines, states, events)
            self.counts["commit_max_s"] = max(self.counts["commit_max_s"],
                                              time.monotonic() - t)
        except Exception:  # e.g. an alert send failed: nothing acked, all of it retried
            log.exception("checkpoint failed; its input is processed again later")
            self.unacked[:0] = events
            self.buffer.lines[:0] = lines
            for run, *_ in states[:-1]:
                if run in self.cache:
                    self.cache[run]["dirty"] = True
        finally:
            self.committing -= n

    async def _commit_snapshot(self, sends: list, lines: list[str], states: list,
                               events: list) -> None:
        for fut in sends:  # 1. alerts and dead letters are on their topics
            await fut
        if self.sink is not None:  # 2. points are in InfluxDB or fsynced to the spill
            try:
                await self.buffer.flush_lines(lines, self.sink.write_lines)
            except Backpressure as exc:
                log.error("%s; not acknowledging input until it drains", exc)
                self.unacked[:0] = events  # the lines went back into the buffer
                return  # states stay dirty: written with a later checkpoint
            lines.clear()  # durable now
        new = states[-1]
        for run, ver, blob, ended in states[:-1]:  # 3. changed states go to the changelog
            key = run.encode()
            if ended and not is_marker(self.table.get(key)):
                self.markers += 1
            self.table[key] = blob.encode()
            ent = self.cache.get(run)
            if ent is not None and ent["ver"] == ver:  # unchanged since the snapshot
                ent["dirty"] = False
                if ended:
                    del self.cache[run]
                    self.last_seen.pop(run, None)
        self.new_runs = max(0, self.new_runs - new)
        for ev in events:  # 4. the input is done: Faust may commit its offsets
            ev.ack()
        self.counts["checkpoints"] += 1
