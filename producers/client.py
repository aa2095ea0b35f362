"""The trainer-side client: ``log()`` is an enqueue; a background thread batches and sends.

``log`` never touches the network and never raises on transport trouble. The queue is
bounded: when it is full the oldest event is dropped and counted (``stats()``), and the
count is reported when the monitor closes.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque

from telltale.schema import MAX_MESSAGE_BYTES, encode_batch

log = logging.getLogger("telltale")


class Monitor:
    """Publishes one run's metric events. Use :func:`telltale.init` to make one."""

    def __init__(self, run: str, transport, tags: dict | None = None,
                 max_queue: int = 100_000, batch_size: int = 500, linger: float = 0.05,
                 retry_backoff: float = 0.5, max_backoff: float = 10.0):
        if not isinstance(run, str) or not run:
            raise ValueError("run must be a non-empty string, e.g. telltale.init(run='exp-1')")
        self.run = run
        self.tags = {k: str(v) for k, v in (tags or {}).items()}
        self.transport = transport
        self.max_queue, self.batch_size, self.linger = max_queue, batch_size, linger
        self.retry_backoff, self.max_backoff = retry_backoff, max_backoff
        self._q: deque = deque()
        self._inflight: list | None = None  # the batch being sent
        self._step = 0
        self._sent = 0
        self._dropped = 0
        self._failures = 0
        self._last_error: str | None = None
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"telltale-sender-{run}",
                                        daemon=True)
        self._thread.start()
        _live.add(self)

    # -- trainer-facing ---------------------------------------------------------

    def log(self, metrics: dict, step: int | None = None, kind: str = "train",
            ts: float | None = None, tags: dict | None = None) -> None:
        """Queue one event (never blocks on the network, never raises on transport errors)."""
        if step is None:
            step = self._step + 1
        self._step = step
        ev = {"step": step, "ts": time.time() if ts is None else ts, "kind": kind,
              "metrics": dict(metrics)}
        if tags or self.tags:
            ev["tags"] = {**self.tags, **tags} if tags else self.tags
        q = self._q
        if len(q) >= self.max_queue:
            try:
                q.popleft()
                self._dropped += 1
            except IndexError:
                pass
        q.append(ev)
        if len(q) >= self.batch_size:
            self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._q or self._inflight is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
            self._wake.set()
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Send an end-of-run marker, flush, stop the sender. Safe to call twice."""
        if self._closed:
            return
        self._q.append({"step": self._step, "ts": time.time(), "kind": "end", "metrics": {}})
        ok = self.flush(timeout)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1.0)
        self.transport.close()
        _live.discard(self)
        left = len(self._q) + len(self._inflight or ())
        if not ok or left:
            log.warning("telltale: run %s closed with %d events undelivered; last transport "
                        "error: %s", self.run, left, self._last_error)
        if self._dropped:
            log.warning("telltale: run %s dropped %d events because its queue (max %d) was "
                        "full", self.run, self._dropped, self.max_queue)

    def stats(self) -> dict:
        queued = len(self._q) + len(self._inflight or ())
        return {"run": self.run, "sent": self._sent, "queued": queued,
                "dropped": self._dropped, "send_failures": self._failures,
                "last_error": self._last_error}

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- sender thread ------------------------------------------------------------

    def _take(self) -> list[dict]:
        q, batch = self._q, []
        while q and len(batch) < self.batch_size:
            batch.append(q.popleft())
        return batch

    def _run(self) -> None:
        backoff = self.retry_backoff
        while True:
            self._wake.wait(self.linger)
            self._wake.clear()
            if self._closed and not self._q:
                return
            while self._q:
                self._inflight = []  # set before popping, so flush() never sees a gap
                batch = self._inflight = self._take()
                try:
                    for payload in _encode(self.run, batch):
                        self.transport.send(self.run, payload)
                except Exception as exc:  # keep the batch, retry later
                    self._q.extendleft(reversed(batch))
                    self._inflight = None
                    self._failures += 1
                    self._last_error = str(exc)
                    if self._closed:
                        return
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    break
                self._inflight = None
                self._sent += len(batch)
                backoff = self.retry_backoff


def _encode(run: str, batch: list[dict]) -> list[bytes]:
    """One payload, or several if the batch would exceed the message limit."""
    payload = encode_batch(run, batch)
    if len(payload) <= MAX_MESSAGE_BYTES or len(batch) == 1:
        return [payload]
    mid = len(batch) // 2
    return _encode(run, batch[:mid]) + _encode(run, batch[mid:])


_live: weakref.WeakSet[Monitor] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for m in list(_live):
        m.close(timeout=5.0)
