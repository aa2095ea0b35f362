"""The Kafka-mode topology, top to bottom: topics → table → agent → sinks.

    metrics topic (key = run id, value = a batch of that run's events)
      └─ agent `process`: decode → RunProcessor (state per run in the `run-state` table)
           ├─ window stats, scores, raw metrics → InfluxDB (buffered, flushed by a timer)
           ├─ anomalies → alerts topic
           └─ rejected input, with the reason → dead-letter topic

One message is one batch; the table is written once per message, not once per event.
"""

from __future__ import annotations

import json
import logging
import os

import faust
import mode

from telltale.config import Config
from telltale.schema import Rejected, decode_message, dumps
from telltale.sinks.influx import AsyncInfluxSink, ensure_database
from telltale.streams.processor import RunProcessor

log = logging.getLogger("telltale.worker")

FLUSH_INTERVAL = 0.25  # seconds between InfluxDB writes
FLUSH_POINTS = 5000  # or sooner, once this many points wait
MAX_PENDING_POINTS = 1_000_000  # kept in memory while InfluxDB is unreachable


def build_app(cfg: Config, ui: bool = False) -> faust.App:
    """The worker app; ``ui`` serves the dashboard at /ui/ on 127.0.0.1:``cfg.web_port``."""
    app = faust.App(
        cfg.app_id,
        broker=f"kafka://{cfg.kafka}",
        store="memory://",
        datadir=cfg.data_dir,
        topic_partitions=cfg.partitions,
        web_enabled=ui,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        web_port=cfg.web_port,
        producer_max_request_size=4 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
           "value_serializer": "raw"}
    metrics_topic = app.topic(cfg.metrics_topic, partitions=cfg.partitions, **raw)
    alerts_topic = app.topic(cfg.alerts_topic, partitions=cfg.partitions, **raw)
    deadletter_topic = app.topic(cfg.deadletter_topic, partitions=cfg.partitions, **raw)
    run_state = app.Table("run-state", default=None, partitions=cfg.partitions,
                          schema=faust.Schema(**raw))

    processor = RunProcessor(cfg)
    sink = AsyncInfluxSink(cfg) if cfg.influx_url else None
    pending: list = []
    seen_runs: dict[str, int] = {}  # run -> events this worker processed (for ops and tests)

    dropped = 0  # points given up on while InfluxDB was unreachable

    async def flush_points() -> None:
        """Write what is pending; on failure keep it (bounded) and try again next time."""
        nonlocal dropped
        if sink is None or not pending:
            return
        batch = pending[:]
        pending.clear()
        try:
            await sink.write_points(batch)
        except Exception as exc:
            pending[:0] = batch
            over = len(pending) - MAX_PENDING_POINTS
            if over > 0:
                del pending[:over]
                dropped += over
            log.warning("InfluxDB write failed (%s); %d points waiting, %d dropped so far",
                        exc, len(pending), dropped)

    async def dead_letter(key, rejected: Rejected) -> None:
        log.warning("dead-lettered input: %s", rejected.reason)
        await deadletter_topic.send(key=key, value=dumps(rejected.to_dict()).encode())

    @app.agent(metrics_topic)
    async def process(stream):
        async for event in stream.events():
            key, value = event.key, event.value
            try:
                events, rejected = decode_message(value)
                for r in rejected:
                    await dead_letter(key, r)
                by_run: dict[str, list] = {}
                for ev in events:
                    by_run.setdefault(ev.run, []).append(ev)
                for run, evs in by_run.items():
                    rkey = run.encode()
                    saved = run_state.get(rkey)
                    state = json.loads(saved) if saved else processor.new_state(run)
                    out = processor.process(state, evs)
                    seen_runs[run] = seen_runs.get(run, 0) + len(evs)
                    if state["ended"]:
                        run_state.pop(rkey, None)  # release the state of finished runs
                    else:
                        run_state[rkey] = dumps(state).encode()
                    for a in out.alerts:
                        await alerts_topic.send(key=rkey, value=dumps(a).encode())
                    pending.extend(out.points)
            except Exception as exc:  # a poison message must not stop the worker
                log.exception("processing failed")
                await dead_letter(key, Rejected(f"processing error: {exc!r}", value))
            if len(pending) >= FLUSH_POINTS:
                await flush_points()

    @app.timer(FLUSH_INTERVAL)
    async def flush_timer():
        await flush_points()

    @app.timer(0.5)
    async def write_status():
        """Assigned partitions and runs seen, in DATA_DIR/worker-status.json (for ops)."""
        assigned = sorted(tp.partition for tp in app.consumer.assignment()
                          if tp.topic == cfg.metrics_topic)
        path = os.path.join(cfg.data_dir, "worker-status.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"pid": os.getpid(), "assigned": assigned, "runs": seen_runs}, f)
        os.replace(path + ".tmp", path)

    @app.task
    async def on_started():
        logging.getLogger().setLevel(cfg.log_level.upper())  # faust leaves root at DEBUG
        log.warning("telltale worker consuming %s (%d partitions)", cfg.metrics_topic,
                    cfg.partitions)

    if ui:
        _dashboard_pages(app, cfg)

    @app.service
    class PointFlusher(mode.Service):
        """Writes the last pending points when the worker stops."""

        async def on_stop(self) -> None:
            await flush_points()
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
            return reply(self, await asyncio.to_thread(dash.runs))

    @app.page("/ui/api/run/{run}")
    class DashboardRun(View):
        async def get(self, request, run):
            k = request.query.get("k")
            return reply(self, await asyncio.to_thread(dash.run, run, k))


def run_worker(cfg: Config, ui: bool = False) -> None:
    """Run a Faust worker in the foreground until interrupted."""
    from faust.worker import Worker

    from telltale.streams.topics import ensure_topics

    ensure_topics(cfg)
    if cfg.influx_url:
        ensure_database(cfg)
    app = build_app(cfg, ui=ui)


    os.makedirs(cfg.data_dir, exist_ok=True)
    worker = Worker(app, loglevel=cfg.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
