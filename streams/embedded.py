"""The embedded default: the same processor in one process, an in-memory bus, a local store.

Producers hand batches to :meth:`EmbeddedPipeline.submit` (what they would send to
Kafka); a consumer thread decodes them with the worker's own decoder and runs the same
:class:`RunProcessor`. :class:`EmbeddedDriver` is the one way the CLI (``demo``,
``detect``, ``report --events``) and ``telltale.init()`` without a broker drive it.
Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from telltale.config import Config
from telltale.extras import require
from telltale.schema import Rejected, decode_message, encode_batch
from telltale.sinks.store import Store
from telltale.streams.processor import Output, RunProcessor

log = logging.getLogger(__name__)
_STOP = object()
FLUSH_EVERY = 0.5  # seconds: the store is flushed at least this often, and on every alert


class EmbeddedPipeline:
    """In-process pipeline: bus → decode → :class:`RunProcessor` → store / alert callbacks."""

    def __init__(self, config: Config | None = None, store: Store | None = None,
                 on_alert: Callable[[dict], None] | None = None,
                 on_reject: Callable[[dict], None] | None = None, bus_size: int = 10_000):
        self.config = config or Config()
        self.processor = RunProcessor(self.config)
        self.store = store
        self.on_alert = on_alert
        self.on_reject = on_reject
        self.states: dict[str, dict] = {}
        self.counts: Counter = Counter()
        self._bus: queue.Queue = queue.Queue(maxsize=bus_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._flushed = time.monotonic()

    # -- the bus ----------------------------------------------------------------

    def submit(self, key, value: bytes, timeout: float = 1.0) -> None:
        """Put one message on the bus (raises ``queue.Full`` if it stays full)."""
        if self._thread is None:
            self.start()
        self._bus.put((key, value), timeout=timeout)

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._consume, name="telltale-embedded",
                                                daemon=True)
                self._thread.start()

    def _consume(self) -> None:
        while True:
            item = self._bus.get()
            try:
                if item is _STOP:
                    return
                self.handle(*item)
            except Exception:  # a sink or callback failed: log it, the pipeline goes on
                self.counts["errors"] += 1
                log.exception("embedded pipeline: handling a message failed")
            finally:
                self._bus.task_done()

    def drain(self) -> None:
        """Wait until every submitted message has been processed."""
        self._bus.join()

    def close(self) -> Output:
        """Drain, stop the consumer, close every run's open windows."""
        if self._thread is not None:
            self._bus.put(_STOP)
            self._thread.join()
            self._thread = None
        out = Output()
        with self._lock:
            for state in self.states.values():
                if not state["ended"]:
                    out.extend(self.processor.flush(state, reason="input ended"))
            self._emit(out)
        if self.store is not None:
            self.store.flush()
        return out

    # -- processing -----------------------------------------------------------------

    def handle(self, key, value: bytes) -> Output:
        """Decode and process one message synchronously (what the consumer thread does)."""
        events, rejected = decode_message(value)
        with self._lock:
            out = Output(rejected=list(rejected))
            by_run: dict[str, list] = {}
            for ev in events:
                by_run.setdefault(ev.run, []).append(ev)
            for run, evs in by_run.items():
                state = self.states.get(run)
                if state is None:
                    state = self.states[run] = self.processor.new_state(run)
                try:
                    out.extend(self.processor.process(state, evs))
                except Exception as exc:  # dead-letter the batch, go on with the rest
                    self.counts["errors"] += 1
                    log.exception("embedded pipeline: processing run %r failed", run)
                    out.rejected.append(Rejected(
                        f"processing error: {exc!r}; these {len(evs)} events of run "
                        f"{run!r} were not processed", {"run": run, "events": [
                            e.to_dict() for e in evs]}, run))
                    continue
                if state["ended"]:  # a run that ended releases its state (bounded memory)
                    del self.states[run]
            self.counts["events"] += len(events)
            self.counts["messages"] += 1
            self._emit(out)
        return out

    def _emit(self, out: Output) -> None:
        for r in out.rejected:
            self.counts["rejected"] += 1
            rec = r.to_dict()
            if self.store is not None:
                self.store.write_deadletters([rec])
            if self.on_reject is not None:
                self.on_reject(rec)
        self.counts["alerts"] += len(out.alerts)
        points = out.all_points()
        self.counts["points"] += len(points)
        if self.store is not None:
            self.store.write_points(points)
            self.store.write_alerts(out.alerts)
            now = time.monotonic()
            if out.alerts or now - self._flushed >= FLUSH_EVERY:  # readers see alerts now
                self.store.flush()
                self._flushed = now
        if self.on_alert is not None:
            for a in out.alerts:
                self.on_alert(a)


class EmbeddedDriver:
    """The embedded pipeline with what surrounds it: a store, an alert callback and, with
    ``notify``, in-process delivery through ``config.notify_config`` (handlers, routes,
    silences in ``<store_dir>/silences.json``).

    Fed by monitors (:meth:`submit`, on the pipeline's consumer thread) or by an events
    file (:meth:`feed`, in the caller's thread); :meth:`close` finishes everything.
    """

    def __init__(self, config: Config, store=None, *,
                 on_alert: Callable[[dict], None] | None = None,
                 on_reject: Callable[[dict], None] | None = None, notify: bool = False):
        require("worker", "the embedded pipeline", ("sklearn",))  # the run rules' models
        self.config = config
        self.store = store
        self.notifier = _notifier(config, store) if notify else None  # ConfigError: now
        self._on_alert = on_alert
        self.pipeline = EmbeddedPipeline(config, store, on_alert=self._alert,
                                         on_reject=on_reject)

    @property
    def counts(self) -> Counter:
        """events, messages, alerts, points, rejected, errors."""
        return self.pipeline.counts

    def _alert(self, a: dict) -> None:
        if self._on_alert is not None:
            self._on_alert(a)
        if self.notifier is not None:
            self.notifier.submit(a)  # never blocks: delivery runs on its own thread

    def submit(self, key, value: bytes, timeout: float = 1.0) -> None:
        """A producer's batch (a :class:`~telltale.producers.CallableTransport` target)."""
        self.pipeline.submit(key, value, timeout=timeout)

    def feed(self, path: str, progress: Callable[[float], None] | None = None) -> None:
        """Process a JSONL events file in file order; ``progress(fraction read)`` about
        once a second."""
        total, read, last = max(os.path.getsize(path), 1), 0, time.monotonic()
        for run, payload in read_batches(path):
            read += len(payload)
            self.pipeline.handle(run, payload)
            if progress is not None and time.monotonic() - last > 1.0:
                progress(read / total)
                last = time.monotonic()

    def close(self, say: Callable[[str], None] | None = None) -> None:
        """Process what was submitted, close every run's open windows, deliver the last
        alerts (``say`` is told when that is waited for), close the store."""
        self.pipeline.close()
        if self.notifier is not None:
            if say is not None:
                say("delivering the last alerts...")
            self.notifier.close()
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def _notifier(config: Config, store):
    """The in-process notifier for ``config.notify_config`` (None when unset)."""
    if not config.notify_config:
        return None
    from telltale.sinks.delivery import NotifyConfig
    from telltale.sinks.notify import BackgroundNotifier
    from telltale.sinks.silences import FileSilences

    return BackgroundNotifier(NotifyConfig.load(config.notify_config), FileSilences(
        os.path.join(config.store_dir, "silences.json")), store)


def read_batches(path: str, batch: int = 500):
    """Yield (run, encoded batch) in file order, one run per batch; a line that is not a
    JSON object with a string ``run`` is yielded alone, as (None, line), for the decoder
    to reject with its reason."""
    cur_run: str = ""
    buf: list[dict] = []  # events of cur_run (never empty with cur_run unset)
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                run = d.get("run") if isinstance(d, dict) else None
            except ValueError:
                run, d = None, None
            if not isinstance(run, str) or d is None:
                if buf:
                    yield cur_run, encode_batch(cur_run, buf)
                    cur_run, buf = "", []
                yield None, line
                continue
            if run != cur_run or len(buf) >= batch:
                if buf:
                    yield cur_run, encode_batch(cur_run, buf)
                cur_run, buf = run, []
            buf.append({k: v for k, v in d.items() if k != "run"})
    if buf:
        yield cur_run, encode_batch(cur_run, buf)
