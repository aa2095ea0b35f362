"""The agent's batches: messages wait a little, then each run's events go through the
processor in one call.

Messages wait up to PENDING_WAIT (or PENDING_MESSAGES / PENDING_BYTES of them): a run
sending small messages costs one processor call per batch, not one per message. A run's
state remembers the offset of the last message applied to it; after a crash, messages the
restored state already holds are skipped, the rest are processed again and give the same
outputs (deterministic alert ids; InfluxDB overwrites the same points).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from telltale.config import Config
from telltale.schema import Rejected, decode_message
from telltale.streams.checkpoint import Checkpointer
from telltale.streams.outputs import Outputs
from telltale.streams.processor import RunProcessor

log = logging.getLogger("telltale.worker")

PENDING_MESSAGES = 1000  # the most messages the agent takes before processing them
PENDING_BYTES = 2 << 20  # or this many bytes of them
PENDING_WAIT = 0.1  # or the longest the first of them waits
STATUS_RUNS = 10_000  # worker-status.json counts events of this many most recent runs


class MessageBatch:
    """Messages the agent took and has not processed yet: (event, process it?)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, bool]] = []
        self.since = 0.0  # when the first of them arrived
        self.bytes = 0

    def add(self, event: Any, fresh: bool, age: float = 0.0) -> None:
        """``age``: how long the message has been in Kafka (its timestamp to now). A batch
        whose first message already waited there (while this worker was busy processing)
        does not wait PENDING_WAIT again; a skewed producer clock can only shorten it."""
        if not self.items:
            self.since = time.monotonic() - (min(age, PENDING_WAIT) if age > 0 else 0.0)
            self.bytes = 0
        self.items.append((event, fresh))
        self.bytes += len(event.value)

    def full(self) -> bool:
        return len(self.items) >= PENDING_MESSAGES or self.bytes >= PENDING_BYTES

    def waited(self, seconds: float) -> bool:
        return bool(self.items) and time.monotonic() - self.since >= seconds

    def take(self) -> list[tuple[Any, bool]]:
        items, self.items = self.items, []
        return items

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: their messages are its to process."""
        self.items = [p for p in self.items if p[0].message.partition not in partitions]


class BatchHandler:
    """Decodes a batch of metrics messages and runs each run's events through the processor.

    Rejected input is dead-lettered with its reason; an error processing one run
    dead-letters that run's messages of the batch and the worker goes on.
    """

    def __init__(self, cfg: Config, processor: RunProcessor, ck: Checkpointer,
                 outputs: Outputs, table: Any):
        self.cfg, self.processor, self.ck, self.outputs, self.table = (
            cfg, processor, ck, outputs, table)
        self.pending = MessageBatch()
        self.counts: dict[str, float] = {"messages": 0, "batches": 0, "skipped": 0,
                                         "input_age_max_s": 0.0, "batch_wait_s": 0.0,
                                         "process_s": 0.0, "process_max_s": 0.0}
        self.age_sum = 0.0  # seconds from the messages' Kafka timestamps to the agent
        self.runs: OrderedDict[str, int] = OrderedDict()  # run -> events processed

    def add(self, event: Any, fresh: bool) -> None:
        """Take a message of the agent's (``fresh``: not processed before)."""
        age = time.time() - event.message.timestamp  # since the producer sent it
        self.counts["input_age_max_s"] = max(self.counts["input_age_max_s"], age)
        self.age_sum += age
        self.pending.add(event, fresh, age)

    async def process(self) -> None:
        """Decode the pending messages, then process each run's events in one call."""
        t0 = time.monotonic()
        self.counts["batch_wait_s"] += t0 - self.pending.since  # the first message's wait
        batch = self.pending.take()
        self.counts["batches"] += 1
        by_run: dict[str, list] = {}  # run -> [(event, its events)] in offset order
        for event, fresh in batch:
            if not fresh:
                continue
            events, rejected = decode_message(event.value)
            for r in rejected:
                await self.outputs.dead_letter(event.key, r)
            runs: dict[str, list] = {}
            for ev in events:
                runs.setdefault(ev.run, []).append(ev)
            for run, evs in runs.items():
                by_run.setdefault(run, []).append((event, evs))
            self.counts["messages"] += 1
        for run, items in by_run.items():
            try:
                await self._process_run(run, items)
            except Exception as exc:  # a poison message must not stop the worker
                log.exception("processing failed")
                for event, _ in items:
                    await self.outputs.dead_letter(event.key, Rejected(
                        f"processing error: {exc!r}", event.value, run))
        self.ck.unacked.extend(event for event, _ in batch)
        took = time.monotonic() - t0
        self.counts["process_s"] += took
        self.counts["process_max_s"] = max(self.counts["process_max_s"], took)

    async def process_waiting(self) -> None:
        """Process what waited PENDING_WAIT for more messages that did not come."""
        if self.pending.waited(PENDING_WAIT):
            async with self.ck.lock:
                if self.pending.items:
                    await self.process()

    async def _process_run(self, run: str, items: list) -> None:
        ck, cfg = self.ck, self.cfg
        key = items[0][0].key
        if run not in ck.cache and run.encode() not in self.table \
                and len(self.table) + ck.new_runs >= cfg.max_active_runs:
            await self.outputs.dead_letter(key, Rejected(
                f"this worker already holds {cfg.max_active_runs} active runs "
                f"(TELLTALE_MAX_ACTIVE_RUNS); run {run!r} not started",
                {"run": run, "events": sum(len(evs) for _, evs in items)}, run))
            return
        ent = ck.state_for(run, items[0][0].message.partition, self.processor.new_state)
        state = ent["state"]
        offs = state.setdefault("offsets", {})
        evs, last = [], {}
        for event, mevs in items:
            part, offset = str(event.message.partition), event.message.offset
            if offs.get(part, -1) >= offset:
                self.counts["skipped"] += 1  # already in the restored state
                continue
            evs.extend(mevs)
            last[part] = offset
        if not last:
            return
        out = self.processor.process(state, evs)
        # kept in the state too: a restarted worker or a new owner goes on with its clock
        state["seen_at"] = ck.last_seen[run] = round(time.time(), 3)
        offs.update(last)
        ck.changed(ent)
        self.runs[run] = self.runs.pop(run, 0) + len(evs)
        if len(self.runs) > STATUS_RUNS:  # bounded: the most recently active runs
            self.runs.popitem(last=False)
        await self.outputs.emit(run, key, out)
