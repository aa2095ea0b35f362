"""The embedded default: the same processor in one process, an in-memory bus, a local store.

Producers hand batches to :meth:`EmbeddedPipeline.submit` (what they would send to
Kafka); a consumer thread decodes them with the worker's own decoder and runs the same
:class:`RunProcessor`. Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from telltale.config import Config
from telltale.schema import Rejected, decode_message
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
