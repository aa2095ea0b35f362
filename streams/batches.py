"""The agent's messages, queued per run, go through the processor in arrival order.

The agent only puts each message in an inbox. One loop (:meth:`BatchHandler.drain`)
admits the inbox (offsets, decoding, refusals to the dead-letter topic) into a queue per
run, then takes the run whose oldest message has waited longest, with all of that run's
queued messages, and processes them in one call on the processor's thread, so the event
loop goes on fetching and sending meanwhile. Nothing waits for a batch to fill: a run's
messages gather only while the processor is busy with other runs, so under load each
call takes more of them and the per-call cost is paid less often, and when the worker is
idle a message is processed as soon as it arrives. Input is acked at checkpoints, each
partition's messages in offset order (runs are processed out of it).

A run's state remembers the offset of the last message applied to it; after a crash,
messages the restored state already holds are skipped, the rest are processed again and
give the same outputs (deterministic alert ids; InfluxDB overwrites the same points).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from telltale.config import Config
from telltale.schema import Rejected, decode_message
from telltale.streams.checkpoint import Checkpointer
from telltale.streams.offsets import PartitionOffsets
from telltale.streams.outputs import Outputs
from telltale.streams.processor import RunProcessor

log = logging.getLogger("telltale.worker")

QUEUED_MESSAGES = 1000  # the agent waits while this many messages are not processed yet
QUEUED_BYTES = 4 << 20  # or this many bytes of them
ALERT_SEND_WAIT = 0.05  # the longest a run's processing waits for its alerts' delivery
HOLD_MAX = 600.0  # a message's first event older than this was not held by the producer
STATUS_RUNS = 10_000  # worker-status.json counts events of this many most recent runs


class RunQueue:
    """Admitted messages not processed yet, per run, the run with the oldest first."""

    def __init__(self) -> None:
        self.runs: OrderedDict[str, list[list]] = OrderedDict()
        self.since: dict[str, float] = {}  # run -> when its oldest queued message came
        self.messages = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self.messages

    def add(self, run: str, entry: list) -> None:
        """Queue a message's ack record ``[event, done, events]`` (events all of ``run``)."""
        items = self.runs.get(run)
        if items is None:
            items = self.runs[run] = []
            self.since[run] = time.monotonic()
        items.append(entry)
        self.messages += 1
        self.bytes += len(entry[0].value)

    def take(self) -> tuple[str, list[list], float]:
        """The run that waited longest: (run, its messages in offset order, since)."""
        run, items = self.runs.popitem(last=False)
        self.messages -= len(items)
        self.bytes -= sum(len(it[0].value) for it in items)
        return run, items, self.since.pop(run)

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: their messages are its to process."""
        for run in list(self.runs):
            keep: list[list] = []
            gone: list[list] = []
            for it in self.runs[run]:
                (gone if it[0].message.partition in partitions else keep).append(it)
            if not gone:
                continue
            self.messages -= len(gone)
            self.bytes -= sum(len(it[0].value) for it in gone)
            if keep:
                self.runs[run] = keep
            else:
                del self.runs[run]
                del self.since[run]


class BatchHandler:
    """Admits, decodes and processes the agent's messages, a run at a time.

    Rejected input is dead-lettered with its reason; an error processing one run
    dead-letters that run's messages and the worker goes on.
    """

    def __init__(self, cfg: Config, processor: RunProcessor, ck: Checkpointer,
                 outputs: Outputs, table: Any, offsets: PartitionOffsets | None = None):
        self.cfg, self.processor, self.ck, self.outputs, self.table = (
            cfg, processor, ck, outputs, table)
        self.offsets = offsets
        self.inbox: list[Any] = []  # messages the agent took, not admitted yet
        # partition -> its admitted messages in offset order, as ack records [event, done,
        # events] (the run queue holds the same records). A message is acked only once
        # every message before it in its partition is done: runs are processed out of
        # offset order, and Faust's commit guards a gap before the acked offsets only
        # partly (not without a committed offset, not for one message; faust-streaming
        # 0.15.3 Consumer._new_offset)
        self.admitted: dict[int, deque[list]] = {}
        self.queue = RunQueue()
        self.ready = asyncio.Event()  # the inbox has messages
        self.room = asyncio.Event()  # the agent may take more
        self.room.set()
        self.counts: dict[str, float] = {"messages": 0, "batches": 0, "skipped": 0,
                                         "input_age_max_s": 0.0, "batch_wait_s": 0.0,
                                         "process_s": 0.0, "process_max_s": 0.0}
        self.age_sum = 0.0  # seconds from the messages' Kafka timestamps to the agent
        self.taken = 0  # messages the agent took
        # seconds from a message's first event (its ts, the producer's clock) to the
        # message's Kafka timestamp: what the producer held it
        self.hold_sum = 0.0
        self.holds = 0
        self.runs: OrderedDict[str, int] = OrderedDict()  # run -> events processed
        # one thread: a run's calls stay in order, and the event loop is free meanwhile
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="telltale-processor")
        self.task: asyncio.Task | None = None  # the processing loop, while it runs

    def full(self) -> bool:
        queued = len(self.inbox) + len(self.queue)
        return queued >= QUEUED_MESSAGES or self.queue.bytes >= QUEUED_BYTES

    def add(self, event: Any) -> None:
        """Take a message of the agent's (admitted by the drain loop)."""
        age = time.time() - event.message.timestamp  # since the producer sent it
        self.counts["input_age_max_s"] = max(self.counts["input_age_max_s"], age)
        self.age_sum += age
        self.taken += 1
        self.inbox.append(event)
        self.ready.set()
        if self.full():
            self.room.clear()

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: drop their messages not processed yet."""
        self.inbox = [e for e in self.inbox if e.message.partition not in partitions]
        self.queue.forget(partitions)
        for p in partitions:
            self.admitted.pop(p, None)
        if not self.full():
            self.room.set()

    async def drain(self) -> None:
        """Admit and process messages as they come (the worker's processing loop)."""
        self.task = asyncio.current_task()
        while True:
            if not (self.inbox or self.queue.runs):
                self.ready.clear()
                await self.ready.wait()
            step = asyncio.ensure_future(self._step())
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError:
                # the worker stops: a run being processed finishes first, so its state,
                # outputs and acks agree when the final checkpoint reads them
                await asyncio.wait([step])
                raise
            except Exception:  # processing dead-letters; this is a bug: go on
                log.exception("processing failed")
                await asyncio.sleep(0.1)
            if not self.full():
                self.room.set()
            if self.ck.due():
                try:
                    await self.ck.checkpoint()
                except Exception:  # the input stays un-acked; the timer's checkpoint retries
                    log.exception("checkpoint failed")

    async def stop(self) -> None:
        """End the processing loop (the worker stops); a run being processed finishes."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def _step(self) -> None:
        async with self.ck.lock:
            await self.admit()
            if self.queue.runs:
                await self.process_next()

    async def admit(self) -> None:
        """The inbox into the run queue (under the checkpoint lock): messages processed
        before are acked with the next checkpoint, refusals go to the dead-letter topic."""
        inbox, self.inbox = self.inbox, []
        for i, event in enumerate(inbox):
            try:
                fresh = (True if self.offsets is None
                         else await self.offsets.admit(event.message))
            except BaseException:
                self.inbox[:0] = inbox[i:]  # admitted next time
                raise
            if fresh is None:
                continue  # messages before it are missing: read again (tail_check)
            events, rejected = decode_message(event.value) if fresh else ([], [])
            entry = [event, not events, events]  # processed before: acked in turn
            self.admitted.setdefault(event.message.partition, deque()).append(entry)
            if not fresh:
                continue
            self.counts["messages"] += 1
            if events:
                hold = event.message.timestamp - events[0].ts
                if 0.0 <= hold < HOLD_MAX:  # not for events logged with past timestamps
                    self.hold_sum += hold
                    self.holds += 1
                self.queue.add(events[0].run, entry)
            for r in rejected:
                await self.outputs.dead_letter(event.key, r)
        self._release()

    def _release(self) -> None:
        """Messages whose partition is done up to them go to the next checkpoint's acks."""
        for q in self.admitted.values():
            while q and q[0][1]:
                self.ck.unacked.append(q.popleft()[0])

    async def process_next(self) -> None:
        """Process the messages of the run that waited longest (under the lock)."""
        t0 = time.monotonic()
        run, items, since = self.queue.take()
        self.counts["batches"] += 1
        self.counts["batch_wait_s"] += t0 - since
        try:
            await self._process_run(run, items)
        except Exception as exc:  # a poison message must not stop the worker
            log.exception("processing failed")
            for event, _, _ in items:
                await self.outputs.dead_letter(event.key, Rejected(
                    f"processing error: {exc!r}", event.value, run))
        for entry in items:
            entry[1], entry[2] = True, ()  # done; its events are no longer needed
        self._release()
        took = time.monotonic() - t0
        self.counts["process_s"] += took
        self.counts["process_max_s"] = max(self.counts["process_max_s"], took)

    async def process_all(self) -> None:
        """Admit and process everything taken so far, in one go (tests)."""
        async with self.ck.lock:
            await self.admit()
            while self.queue.runs:
                await self.process_next()

    async def _process_run(self, run: str, items: list) -> None:
        ck, cfg = self.ck, self.cfg
        key = items[0][0].key
        if run not in ck.cache and run.encode() not in self.table \
                and len(self.table) + ck.new_runs >= cfg.max_active_runs:
            await self.outputs.dead_letter(key, Rejected(
                f"this worker already holds {cfg.max_active_runs} active runs "
                f"(TELLTALE_MAX_ACTIVE_RUNS); run {run!r} not started",
                {"run": run, "events": sum(len(evs) for _, _, evs in items)}, run))
            return
        ent = ck.state_for(run, items[0][0].message.partition, self.processor.new_state)
        state = ent["state"]
        offs = state.setdefault("offsets", {})
        evs, last = [], {}
        for event, _, mevs in items:
            part, offset = str(event.message.partition), event.message.offset
            if offs.get(part, -1) >= offset:
                self.counts["skipped"] += 1  # already in the restored state
                continue
            evs.extend(mevs)
            last[part] = offset
        if not last:
            return
        out = await asyncio.get_running_loop().run_in_executor(
            self.executor, self.processor.process, state, evs)
        # kept in the state too: a restarted worker or a new owner goes on with its clock
        state["seen_at"] = ck.last_seen[run] = round(time.time(), 3)
        offs.update(last)
        ck.changed(ent)
        self.runs[run] = self.runs.pop(run, 0) + len(evs)
        if len(self.runs) > STATUS_RUNS:  # bounded: the most recently active runs
            self.runs.popitem(last=False)
        n_sends = len(ck.sends)
        await self.outputs.emit(run, key, out)
        sent = ck.sends[n_sends:]
        if out.alerts and sent:
            # sent now, not after the runs queued behind this one (bounded; delivery is
            # awaited again before a checkpoint acks the input)
            await asyncio.wait(sent, timeout=ALERT_SEND_WAIT)
