"""The Kafka-mode topology, top to bottom: topics → table → agent → checkpoints → sinks.

    metrics topic (key = run id, value = a batch of that run's events)
      └─ agent `process`: decode → RunProcessor, state per run cached in memory
           ├─ window stats, scores, raw metrics → InfluxDB (buffered; spilled to disk if down)
           ├─ alert records → alerts topic
           └─ rejected input, with the reason → dead-letter topic
    every CHECKPOINT_INTERVAL (or CHECKPOINT_MESSAGES): alerts acked → points durable →
      changed run states written to the `run-state` table (its changelog) → input acked

Input is acknowledged only after everything it produced is durable, so Faust commits no
offset past work that a crash could lose. A run's state remembers the offset of the last
message applied to it; after a crash, messages the restored state already holds are
skipped, the rest are processed again and give the same outputs (deterministic alert ids;
InfluxDB overwrites the same points). The table is written once per run per checkpoint,
not once per event or message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import OrderedDict

import faust
import mode
from aiokafka.partitioner import DefaultPartitioner

from telltale.access import check_influx, faust_credentials
from telltale.config import Config
from telltale.schema import Rejected, decode_message, dumps
from telltale.sinks.buffer import Backpressure, DurablePointBuffer
from telltale.sinks.influx import AsyncInfluxSink, ensure_database
from telltale.streams.processor import RunProcessor

log = logging.getLogger("telltale.worker")

CHECKPOINT_INTERVAL = 0.25  # seconds between checkpoints
CHECKPOINT_MESSAGES = 500  # or sooner, after this many messages
CHECKPOINT_POINTS = 20_000  # or this many points
IDLE_EVICT_S = 120.0  # runs idle this long leave the memory cache (the table keeps them)
MARKER_TTL_S = 600.0  # how long an ended run's marker stays in the table
STATUS_RUNS = 10_000  # worker-status.json counts events of this many most recent runs
PENDING_MESSAGES = 1000  # the most messages the agent takes before processing them
PENDING_BYTES = 2 << 20  # or this many bytes of them
PENDING_WAIT = 0.1  # or the longest the first of them waits


class Checkpointer:
    """Per-run state cache, pending outputs and un-acknowledged input of one worker.

    A checkpoint takes a snapshot under the lock (alert sends, buffered points, changed run
    states, input events) and commits it in a background task, so processing goes on while
    InfluxDB ingests: alerts acked → points durable → states to the changelog → input acked.
    One commit is in flight at a time; past 4× the checkpoint bounds the agent waits for it.
    """

    def __init__(self, table, buffer: DurablePointBuffer, sink, producer):
        self.table, self.buffer, self.sink, self.producer = table, buffer, sink, producer
        self.cache: dict[str, dict] = {}  # run -> {"state", "dirty", "ver", "seen", "partition"}
        self.unacked: list = []
        self.sends: list = []  # futures of alert / dead-letter sends since the last checkpoint
        self.lock = asyncio.Lock()
        self.inflight: asyncio.Task | None = None
        self.committing = 0  # points in commits not finished yet
        self.last = time.monotonic()
        self.counts = {"checkpoints": 0, "messages": 0, "batches": 0, "skipped": 0,
                       "evicted": 0, "refetches": 0, "expired_runs": 0,
                       "commit_wait_s": 0.0, "commit_max_s": 0.0, "input_age_max_s": 0.0}
        self.age_sum = 0.0  # seconds from the messages' Kafka timestamps to the agent
        self.new_runs = 0  # runs started whose state is not in the table yet
        self.unsnapped_new = 0  # of those, started since the last snapshot
        self.markers = 0  # ended runs' markers in the table (recounted by `expire`)
        self.expected: dict[int, int] = {}  # partition -> next offset to process
        self.rewind = False  # read again from the committed offsets (see tail_check)
        self.progress: dict[int, float] = {}  # partition -> when it last moved
        self.last_seen: dict[str, float] = {}  # run -> wall time of its last event here
        self.force = False  # snapshot even with no input pending (a run was expired)

    def state_for(self, run: str, partition: int, new_state) -> dict:
        ent = self.cache.get(run)
        if ent is None:
            saved = self.table.get(run.encode())
            state = json.loads(saved) if saved else new_state(run)
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
        """Start a commit of what is pending (``wait``: and wait until it is done)."""
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

    async def wait_commit(self) -> None:
        task = self.inflight
        if task is not None:
            await asyncio.shield(task)

    def _snapshot(self):
        self.last = time.monotonic()
        if not (self.unacked or len(self.buffer) or self.force or self.buffer.spill_files()):
            return None
        self.force = False
        sends, self.sends = self.sends, []
        lines = self.buffer.take()
        now = time.monotonic()
        states = []  # (run, ver, JSON or None for a run that ended)
        for run, ent in list(self.cache.items()):
            if ent["dirty"]:
                st = ent["state"]
                if st.get("ended"):  # release the state, keep a small marker for replays
                    marker = {"run": run, "ended_marker": True, "ended_at": time.time(),
                              "offsets": st.get("offsets", {})}
                    states.append((run, ent["ver"], dumps(marker), True))
                else:
                    states.append((run, ent["ver"], dumps(st), False))
            elif now - ent["seen"] > IDLE_EVICT_S:
                del self.cache[run]
                self.counts["evicted"] += 1
        events, self.unacked = self.unacked, []
        states.append(self.unsnapped_new)  # new runs this snapshot puts in the table
        self.unsnapped_new = 0
        return sends, lines, states, events

    async def _commit(self, prev, sends, lines, states, events) -> None:
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

    async def _commit_snapshot(self, sends, lines, states, events) -> None:
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
            if ended and not _is_marker(self.table.get(key)):
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

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker: drop what this one cached for them."""
        for run in [r for r, e in self.cache.items() if e["partition"] in partitions]:
            del self.cache[run]
            self.last_seen.pop(run, None)
        self.unacked = [e for e in self.unacked if e.message.partition not in partitions]
        for p in partitions:
            self.expected.pop(p, None)


class _Pending:
    """Messages the agent took and has not processed yet: (event, process it?)."""

    def __init__(self):
        self.items: list[tuple] = []
        self.since = 0.0  # when the first of them arrived
        self.bytes = 0

    def add(self, event, fresh: bool) -> None:
        if not self.items:
            self.since, self.bytes = time.monotonic(), 0
        self.items.append((event, fresh))
        self.bytes += len(event.value)

    def full(self) -> bool:
        return len(self.items) >= PENDING_MESSAGES or self.bytes >= PENDING_BYTES

    def waited(self, seconds: float) -> bool:
        return bool(self.items) and time.monotonic() - self.since >= seconds

    def take(self) -> list[tuple]:
        items, self.items = self.items, []
        return items


def _is_marker(blob: bytes | None) -> bool:
    """An ended run's small marker (not a run state)."""
    return blob is not None and len(blob) < 4096 and b'"ended_marker":true' in blob


def build_app(cfg: Config, ui: bool = False) -> faust.App:
    """The worker app; ``ui`` serves the dashboard at /ui/ on 127.0.0.1:``cfg.web_port``."""
    app = faust.App(
        cfg.app_id,
        broker=f"kafka://{cfg.kafka}",
        broker_credentials=faust_credentials(cfg),
        store="memory://",
        datadir=cfg.data_dir,
        topic_partitions=cfg.partitions,
        web_enabled=ui,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=cfg.web_port,
        web_router_enabled=cfg.faust_web_views, web_tables_enabled=cfg.faust_web_views,
        producer_max_request_size=4 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        # input is acked at checkpoints, not by the agent loop: on stop or rebalance Faust
        # must not wait for un-acked messages (it would wait for the agent it stopped);
        # they are simply processed again by the next owner
        stream_wait_empty=False,
        # failover: a worker that dies without leaving (kill -9, a lost host) holds its
        # partitions until its session times out (Faust's default: 60 s; the broker's
        # floor: 6 s). Heartbeats every session/8. Standby replicas (1, Faust's default)
        # keep a copy of the run-state table on another worker, so a new owner does not
        # read the whole changelog.
        broker_session_timeout=cfg.session_timeout,
        broker_heartbeat_interval=max(0.5, cfg.session_timeout / 8),
        table_standby_replicas=1,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    metrics_topic = app.topic(cfg.metrics_topic, partitions=cfg.partitions, **raw)
    alerts_topic = app.topic(cfg.alerts_topic, partitions=cfg.partitions, **raw)
    deadletter_topic = app.topic(cfg.deadletter_topic, partitions=cfg.partitions, **raw)
    # written at checkpoints, outside stream iteration: the producer's partitioner puts a
    # run's key on the same partition as the run's metrics (same key bytes, same count)
    run_state = app.Table("run-state", default=None, partitions=cfg.partitions,
                          key_type=bytes, value_type=bytes,  # raw bytes in recovery too
                          schema=faust.Schema(**raw), use_partitioner=True)

    processor = RunProcessor(cfg)
    partitioner = DefaultPartitioner()  # the producers': run key -> partition
    all_parts = list(range(cfg.partitions))
    sink = AsyncInfluxSink(cfg) if cfg.influx_url else None
    buffer = DurablePointBuffer(os.path.join(cfg.data_dir, "influx-spill"),
                                max_spill_bytes=cfg.spill_max_bytes)
    ck = Checkpointer(run_state, buffer, sink, app.producer)
    seen_runs: OrderedDict[str, int] = OrderedDict()  # run -> events processed (ops, tests)

    async def dead_letter(key, rejected: Rejected) -> None:
        log.warning("dead-lettered input: %s", rejected.reason)
        ck.sends.append(await deadletter_topic.send(key=key,
                                                    value=dumps(rejected.to_dict()).encode()))

    async def influx_refused(lines: list[str], message: str) -> None:
        """Points InfluxDB refused: to the dead-letter topic with its message, before the
        checkpoint that wrote the rest acknowledges their input."""
        reason = f"InfluxDB refused this point: {message}"
        futs = [await deadletter_topic.send(value=dumps(Rejected(reason, line).to_dict())
                                            .encode()) for line in lines]
        await asyncio.gather(*futs)

    buffer.on_refused = influx_refused
    pending = _Pending()

    @app.agent(metrics_topic)
    async def process(stream):
        """Messages wait up to PENDING_WAIT (or PENDING_MESSAGES / PENDING_BYTES of them),
        then each run's messages of the batch go through the processor in one call: a run
        sending small messages costs one processor call per batch, not one per message."""
        async for event in stream.noack().events():
            async with ck.lock:
                msg = event.message
                exp = ck.expected.get(msg.partition)
                if exp is None:  # first message since the assignment
                    exp = ck.expected[msg.partition] = await start_offset(msg.tp)
                if msg.offset > exp:
                    # a message before this one never reached the agent (dropped from the
                    # fetch buffers in a rebalance): read again from it; ack nothing past it
                    if not ck.rewind:
                        log.warning("partition %d: got offset %d, expected %d; reading "
                                    "again from the committed offset", msg.partition,
                                    msg.offset, exp)
                    ck.rewind = True  # done by `tail_check`, outside the agent
                    continue
                # (a message seen again is acked with the batch, not processed)
                age = time.time() - msg.timestamp  # since the producer sent it
                ck.counts["input_age_max_s"] = max(ck.counts["input_age_max_s"], age)
                ck.age_sum += age
                pending.add(event, msg.offset == exp)
                if msg.offset == exp:
                    ck.expected[msg.partition] = msg.offset + 1
                    ck.progress[msg.partition] = time.monotonic()
                if pending.full():
                    await process_pending()
            if ck.due():
                await ck.checkpoint()

    async def start_offset(tp) -> int:
        """Where a newly assigned partition starts: its committed offset (Faust seeks
        there when the recovery ends), else the start of its log (auto_offset_reset is
        earliest). Messages the fetcher skipped in a rebalance show up as a gap."""
        committed = app.consumer._committed_offset.get(tp)
        if committed is not None:
            return committed
        return (await app.consumer.earliest_offsets(tp)).get(tp) or 0

    async def process_pending() -> None:
        """Decode the pending messages, then process each run's events in one call."""
        batch = pending.take()
        ck.counts["batches"] += 1
        by_run: dict[str, list] = {}  # run -> [(event, its events)] in offset order
        for event, fresh in batch:
            if not fresh:
                continue
            events, rejected = decode_message(event.value)
            for r in rejected:
                await dead_letter(event.key, r)
            runs: dict[str, list] = {}
            for ev in events:
                runs.setdefault(ev.run, []).append(ev)
            for run, evs in runs.items():
                by_run.setdefault(run, []).append((event, evs))
            ck.counts["messages"] += 1
        for run, items in by_run.items():
            try:
                await handle_run(run, items)
            except Exception as exc:  # a poison message must not stop the worker
                log.exception("processing failed")
                for event, _ in items:
                    await dead_letter(event.key, Rejected(f"processing error: {exc!r}",
                                                          event.value, run))
        ck.unacked.extend(event for event, _ in batch)

    async def handle_run(run: str, items: list) -> None:
        key = items[0][0].key
        if run not in ck.cache and run.encode() not in run_state \
                and len(run_state) + ck.new_runs >= cfg.max_active_runs:
            await dead_letter(key, Rejected(
                f"this worker already holds {cfg.max_active_runs} active runs "
                f"(TELLTALE_MAX_ACTIVE_RUNS); run {run!r} not started",
                {"run": run, "events": sum(len(evs) for _, evs in items)}, run))
            return
        ent = ck.state_for(run, items[0][0].message.partition, processor.new_state)
        state = ent["state"]
        offs = state.setdefault("offsets", {})
        evs, last = [], {}
        for event, mevs in items:
            part, offset = str(event.message.partition), event.message.offset
            if offs.get(part, -1) >= offset:
                ck.counts["skipped"] += 1  # already in the restored state
                continue
            evs.extend(mevs)
            last[part] = offset
        if not last:
            return
        out = processor.process(state, evs)
        # kept in the state too: a restarted worker or a new owner goes on with its clock
        state["seen_at"] = ck.last_seen[run] = round(time.time(), 3)
        offs.update(last)
        ck.changed(ent)
        seen_runs[run] = seen_runs.pop(run, 0) + len(evs)
        if len(seen_runs) > STATUS_RUNS:  # bounded: the most recently active runs
            seen_runs.popitem(last=False)
        await emit(run, key, out)

    async def emit(run: str, key, out) -> None:
        """An output's alerts to the alert topic, its refusals to the dead-letter topic,
        its points to the buffer."""
        rkey = run.encode()
        for a in out.alerts:
            ck.sends.append(await alerts_topic.send(key=rkey, value=dumps(a).encode()))
        for r in out.rejected:
            await dead_letter(key or rkey, r)
        buffer.add(out.points, out.blocks)

    @app.task
    async def pending_flusher():
        """Processes what waited PENDING_WAIT when no further message arrives (a loop, not
        an app.timer: a batch may take longer than the interval)."""
        while True:
            await asyncio.sleep(PENDING_WAIT / 4)
            if pending.waited(PENDING_WAIT):
                try:
                    async with ck.lock:
                        if pending.items:
                            await process_pending()
                except Exception:  # process_pending dead-letters; this is a bug: go on
                    log.exception("processing a batch failed")

    @app.timer(CHECKPOINT_INTERVAL)
    async def checkpoint_timer():
        await ck.checkpoint()

    @app.timer(0.5)
    async def tail_check():
        """Messages dropped from the fetch buffers in a rebalance never reach the agent: a
        later message shows the gap (the agent sets ``ck.rewind``), or, for a partition's
        last messages, its log ends past what was processed while nothing arrives. Then the
        consumer is paused and those partitions read again from the first offset not
        processed. Never during table recovery: the consumer belongs to it then, and Faust
        seeks every partition to its committed offset when it ends."""
        consumer = app.consumer
        if app.in_recovery or not app.tables.recovery.completed.is_set():
            ck.rewind = False
            return
        now = time.monotonic()
        active = consumer._get_active_partitions()
        for tp in consumer.assignment():
            if tp.topic != cfg.metrics_topic or tp not in active:
                continue
            if tp.partition not in ck.expected:  # nothing arrived since the assignment:
                async with ck.lock:  # perhaps its fetched messages were all dropped
                    if tp.partition not in ck.expected:
                        ck.expected[tp.partition] = await start_offset(tp)
                        ck.progress[tp.partition] = now
            exp = ck.expected.get(tp.partition)
            hw = consumer.highwater(tp)
            # stalled: its log goes on, yet none of its messages reached the agent for 3 s
            # while the worker was idle (a busy worker may serve a partition late), or 30 s
            stale = now - ck.progress.get(tp.partition, 0.0)
            idle = now - max(ck.progress.values(), default=0.0)
            if exp is not None and hw is not None and hw > exp \
                    and (stale > 30.0 or (stale > 3.0 and idle > 3.0)):
                log.warning("partition %d: log ends at %d, processed up to %d; reading "
                            "again from there", tp.partition, hw, exp)
                ck.progress[tp.partition] = now
                ck.rewind = True
        if not ck.rewind:
            return
        ck.counts["refetches"] += 1
        consumer.stop_flow()
        try:
            await asyncio.wait_for(consumer.wait_for_stopped_flow(), 10.0)
            to = {tp: ck.expected[tp.partition] for tp in consumer.assignment()
                  if tp.topic == cfg.metrics_topic and tp.partition in ck.expected}
            await consumer.seek_wait(to)  # in the consumer's thread: no race with its fetcher
        except Exception:  # next time; the data stays in Kafka
            log.exception("could not read the partitions again")
        finally:
            ck.rewind = False
            consumer.resume_flow()

    @app.on_partitions_revoked.connect
    async def on_revoked(app, revoked, **kwargs) -> None:
        await ck.wait_commit()  # the commit in flight finishes while this worker owns them
        async with ck.lock:
            # what was processed since the last snapshot is dropped with the cached states
            # (not acked): the next owner reads it again from the committed offset
            gone = {tp.partition for tp in revoked if tp.topic == cfg.metrics_topic}
            pending.items = [p for p in pending.items if p[0].message.partition not in gone]
            ck.forget(gone)

    @app.timer(max(1.0, min(60.0, cfg.run_idle_ttl / 4)))
    async def expire():
        """Ended runs' markers only need to outlive the commit of their last offsets; a run
        of this worker without events for ``run_idle_ttl`` (a trainer that died without its
        ``end``) is ended: windows closed, open incidents resolved, state released."""
        now = time.time()
        old = now - MARKER_TTL_S
        markers = 0
        mine = {tp.partition for tp in app.consumer.assignment()
                if tp.topic == cfg.metrics_topic}
        idle = []
        for k, v in list(run_state.items()):
            if _is_marker(v):
                if json.loads(v).get("ended_at", 0) < old:
                    run_state.pop(k, None)
                else:
                    markers += 1
                continue
            run = k.decode()
            part = partitioner(k, all_parts, all_parts)
            if part not in mine:
                continue
            if run not in ck.last_seen:  # once per run after a start or an assignment
                ck.last_seen[run] = json.loads(v).get("seen_at", now) if v else now
            if now - ck.last_seen[run] > cfg.run_idle_ttl:
                idle.append((run, part))
        ck.markers = markers
        for run, part in idle:
            async with ck.lock:
                ent = ck.state_for(run, part, processor.new_state)
                if ent["state"].get("ended"):
                    continue
                hours = cfg.run_idle_ttl / 3600
                out = processor.end(ent["state"], f"no events for {hours:g} h")
                ck.changed(ent)
                ck.force = True
                ck.counts["expired_runs"] += 1
                log.warning("run %r sent no events for %g h: ended", run, hours)
                await emit(run, None, out)

    @app.timer(0.5)
    async def write_status():
        """Assigned partitions, runs seen and checkpoint counters in DATA_DIR/worker-status.json."""
        assigned = sorted(tp.partition for tp in app.consumer.assignment()
                          if tp.topic == cfg.metrics_topic)
        path = os.path.join(cfg.data_dir, "worker-status.json")
        doc = {"pid": os.getpid(), "assigned": assigned, "runs": seen_runs,
               "cached_runs": len(ck.cache),
               "table_runs": len(run_state) - ck.markers, **ck.counts,
               "input_age_mean_s": ck.age_sum / max(1, ck.counts["messages"]),
               "influx": {**buffer.status(), "pending": len(buffer) + ck.committing}}
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f)
        os.replace(path + ".tmp", path)

    @app.task
    async def on_started():
        logging.getLogger().setLevel(cfg.log_level.upper())  # faust leaves root at DEBUG
        log.warning("telltale worker consuming %s (%d partitions)", cfg.metrics_topic,
                    cfg.partitions)

    if ui:
        _dashboard_pages(app, cfg)

    @app.service
    class FinalCheckpoint(mode.Service):
        """Checkpoints what is pending when the worker stops, then closes the sink."""

        async def on_stop(self) -> None:
            try:
                await ck.checkpoint(wait=True)
            except Exception:  # the input stays un-acked and is processed again
                log.exception("final checkpoint failed")
            if sink is not None:
                await sink.close()

    return app


def _dashboard_pages(app: faust.App, cfg: Config) -> None:
    """The live dashboard on the worker's web server (data from InfluxDB)."""
    import asyncio

    from faust.web import View

    from telltale.ui.data import InfluxSource
    from telltale.ui.server import Dashboard

    class _Source:  # InfluxDB, or a clear error on every API call when none is configured
        def __init__(self):
            self.influx = InfluxSource(cfg) if cfg.influx_url else None

        def __getattr__(self, name):
            if self.influx is None:
                from telltale.ui.data import DataError

                raise DataError("the worker has no InfluxDB (TELLTALE_INFLUX_URL) to read")
            return getattr(self.influx, name)

        def describe(self):
            return self.influx.describe() if self.influx else "no InfluxDB configured"

    dash = Dashboard(_Source())

    def reply(view: View, res):
        status, ctype, body = res
        return view.bytes(body, content_type=ctype, status=status,
                          headers={"Cache-Control": "no-store"})

    @app.page("/ui/")
    class DashboardPage(View):
        async def get(self, request):
            return reply(self, dash.page())

    @app.page("/ui/static/{name:.+}")
    class DashboardStatic(View):
        async def get(self, request, name):
            return reply(self, dash.static(name))

    @app.page("/ui/api/runs")
    class DashboardRuns(View):
        async def get(self, request):
            return reply(self, await asyncio.to_thread(dash.runs, request.query.get("only")))

    @app.page("/ui/api/run/{run}")
    class DashboardRun(View):
        async def get(self, request, run):
            k = request.query.get("k")
            return reply(self, await asyncio.to_thread(dash.run, run, k))


def run_worker(cfg: Config, ui: bool = False) -> None:
    """Run a Faust worker in the foreground until interrupted."""
    from faust.worker import Worker

    from telltale.streams import fetching
    from telltale.streams.topics import ensure_topics

    ensure_topics(cfg)  # also checks the Kafka credentials: a clear error, not a hang
    if cfg.influx_url:
        check_influx(cfg)
        ensure_database(cfg)
    app = build_app(cfg, ui=ui)
    # the input's next data never waits behind a 1.5 s fetch of quiet partitions
    fetching.install({cfg.metrics_topic})
    os.makedirs(cfg.data_dir, exist_ok=True)
    worker = Worker(app, loglevel=cfg.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
