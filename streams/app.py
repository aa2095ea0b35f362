"""The Kafka-mode topology, top to bottom: app → topics → table → agent → tasks, timers.

    metrics topic (key = run id, value = a batch of that run's events)
      └─ agent `process` → task `processing`, a run at a time: decode → RunProcessor (on
         its thread), state per run cached in memory
           ├─ window stats, scores, raw metrics → InfluxDB (buffered; spilled to disk if down)
           ├─ alert records → alerts topic
           └─ rejected input, with the reason → dead-letter topic
    every CHECKPOINT_INTERVAL (or CHECKPOINT_MESSAGES): alerts acked → points durable →
      changed run states written to the `run-state` table (its changelog) → input acked

The parts: streams/batches.py (the processing loop: messages queued per run),
streams/checkpoint.py (state cache and commits), streams/offsets.py (partition offsets
and gaps), streams/fetching.py (fetches that never hold the input back), streams/expiry.py
(idle runs), streams/status.py (worker-status.json), telltale/ui/routes.py (the dashboard
at /ui/).
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import faust
import mode

from telltale.access import faust_credentials
from telltale.config import Config
from telltale.sinks.buffer import DurablePointBuffer
from telltale.sinks.influx import AsyncInfluxSink, check_influx, ensure_database
from telltale.streams.batches import BatchHandler
from telltale.streams.checkpoint import CHECKPOINT_INTERVAL, Checkpointer
from telltale.streams.expiry import RunExpiry
from telltale.streams.offsets import PartitionOffsets
from telltale.streams.outputs import Outputs
from telltale.streams.processor import RunProcessor
from telltale.streams.status import WorkerStatus

log = logging.getLogger("telltale.worker")


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

    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                           "value_serializer": "raw"}
    metrics_topic = app.topic(cfg.metrics_topic, partitions=cfg.partitions, **raw)
    alerts_topic = app.topic(cfg.alerts_topic, partitions=cfg.partitions, **raw)
    deadletter_topic = app.topic(cfg.deadletter_topic, partitions=cfg.partitions, **raw)

    # run id -> the run's state as JSON. Written at checkpoints, outside stream iteration:
    # the producer's partitioner puts a run's key on the same partition as the run's
    # metrics (same key bytes, same count)
    run_state = app.Table("run-state", default=None, partitions=cfg.partitions,
                          key_type=bytes, value_type=bytes,  # raw bytes in recovery too
                          schema=faust.Schema(**raw), use_partitioner=True)

    processor = RunProcessor(cfg)
    processor.pipelines.import_models()
    sink = AsyncInfluxSink(cfg) if cfg.influx_url else None
    buffer = DurablePointBuffer(os.path.join(cfg.data_dir, "influx-spill"),
                                max_spill_bytes=cfg.spill_max_bytes)
    ck = Checkpointer(run_state, buffer, sink)
    outputs = Outputs(alerts_topic, deadletter_topic, buffer, ck)
    buffer.on_refused = outputs.influx_refused
    offsets = PartitionOffsets(app, cfg.metrics_topic)
    batches = BatchHandler(cfg, processor, ck, outputs, run_state, offsets)
    expiry = RunExpiry(run_state, cfg.partitions, cfg.run_idle_ttl, processor, ck, outputs,
                       offsets.assigned)
    status = WorkerStatus(cfg.data_dir, run_state, buffer, ck, batches, offsets, expiry)

    @app.agent(metrics_topic)
    async def process(stream):
        """Hand messages to the processing loop (input is acked at checkpoints)."""
        async for event in stream.noack().events():
            batches.add(event)
            if batches.full():
                await batches.room.wait()

    @app.task
    async def processing() -> None:
        """Admits and processes the agent's messages, a run at a time (streams/batches.py)."""
        await batches.drain()

    @app.timer(CHECKPOINT_INTERVAL)
    async def checkpoint_timer() -> None:
        await ck.checkpoint()

    @app.timer(0.5)
    async def tail_check() -> None:
        """Read again the messages a rebalance dropped from the fetch buffers."""
        await offsets.tail_check(ck.lock)

    # the handler signature Faust documents; mode's typing of connect() does not accept it
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set, **kwargs: Any) -> None:
        await ck.wait_commit()  # the commit in flight finishes while this worker owns them
        async with ck.lock:
            # what was processed since the last snapshot is dropped with the cached states
            # (not acked): the next owner reads it again from the committed offset
            gone = offsets.of_topic(revoked)
            batches.forget(gone)
            ck.forget(gone)
            offsets.forget(gone)

    @app.timer(max(1.0, min(60.0, cfg.run_idle_ttl / 4)))
    async def expire() -> None:
        await expiry.expire()

    @app.timer(0.5)
    async def write_status() -> None:
        status.write()

    @app.task
    async def on_started() -> None:
        logging.getLogger().setLevel(cfg.log_level.upper())  # faust leaves root at DEBUG
        # what start-up made (modules, Faust, aiokafka, scikit-learn) stays out of the
        # collector's full passes; bench/latency.py: 0.6 instead of 2.0 s of pauses per
        # run, the longest 105 instead of 150-170 ms
        gc.collect()
        gc.freeze()
        log.debug("%d start-up objects frozen for the garbage collector",
                  gc.get_freeze_count())
        log.warning("telltale worker consuming %s (%d partitions)", cfg.metrics_topic,
                    cfg.partitions)

    if ui:
        from telltale.ui.routes import add_dashboard_routes

        add_dashboard_routes(app, cfg)

    @app.service
    class FinalCheckpoint(mode.Service):
        """Stops the processing loop, checkpoints what is pending, then closes the sink."""

        async def on_stop(self) -> None:
            await batches.stop()  # a run being processed finishes first
            try:
                await ck.close()
            except Exception:  # the input stays un-acked and is processed again
                log.exception("final checkpoint failed")
            if sink is not None:
                await sink.close()

    return app


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
