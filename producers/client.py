"""The trainer-side client: ``log()`` is an enqueue; a background thread batches and sends.

``log`` never touches the network or the disk and never raises. The queue is bounded: when
it is full the ``overflow`` policy drops the oldest (default) or the newest event, counted
in ``stats()`` and reported when the monitor closes. Validation, tag filtering and text
redaction happen on the sender thread. With a :class:`~telltale.producers.spool.Spool`,
batches that cannot be delivered go to disk and are replayed, in order and before newer
events, once the transport works again.
"""

from __future__ import annotations

import atexit
import logging
import math
import operator
import threading
import time
import weakref
from collections import deque
from types import FunctionType

from telltale.producers.privacy import Privacy
from telltale.schema import KINDS, MAX_MESSAGE_BYTES, MAX_METRICS_PER_EVENT, SCHEMA, encode_batch

try:  # telltale[fast]: ~10x faster float formatting than json (the sender's main cost)
    import orjson
except ImportError:  # pragma: no cover - depends on the installation
    orjson = None

log = logging.getLogger("telltale")

OVERFLOW_POLICIES = ("drop_oldest", "drop_newest")
BUSY = 16  # queued events at a wake-up that make the sender wait longer next time
MAX_KNOWN_NAMES = 65_536  # checked metric names remembered for the sender's fast path


class Monitor:
    """Publishes one run's metric events. Use :func:`telltale.init` to make one."""

    def __init__(self, run: str, transport, tags: dict | None = None,
                 max_queue: int = 100_000, batch_size: int = 500, linger: float = 0.05,
                 max_linger: float = 0.5, retry_backoff: float = 0.5, max_backoff: float = 10.0,
                 overflow: str = "drop_oldest", spool=None, privacy: Privacy | None = None):
        if not isinstance(run, str) or not run:
            raise ValueError("run must be a non-empty string, e.g. telltale.init(run='exp-1')")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self.run = run
        self.privacy = privacy or Privacy()
        self.tags = self.privacy.tags(tags or {})
        self.transport, self.spool = transport, spool
        self.max_queue, self.batch_size, self.linger = max_queue, batch_size, linger
        self.max_linger = max(linger, max_linger)
        self.retry_backoff, self.max_backoff = retry_backoff, max_backoff
        self.overflow = overflow
        self._drop_newest = overflow == "drop_newest"
        self._q: deque = deque()
        self._inflight: list | None = None  # the batch being sent
        self._step = 0
        self._sent = 0
        self._dropped = 0
        self._redacted = 0
        self._invalid = 0
        self._replayed = 0
        self._failures = 0
        self._last_error: str | None = None
        self._warned: set[str] = set()
        self._names: set[str] = set()  # metric names already checked and allowed
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._extras: list = []  # things to stop on close (system sampler, watch handles)
        self._thread = threading.Thread(target=self._run, name=f"telltale-sender-{run}",
                                        daemon=True)
        self._thread.start()
        _live.add(self)

    # -- trainer-facing ---------------------------------------------------------

    def log(self, metrics: dict, step: int | None = None, kind: str = "train",
            ts: float | None = None, tags: dict | None = None) -> None:
        """Queue one event; never blocks on the network or disk, never raises."""
        if step is None:
            step = self._step + 1
        elif type(step) is not int:
            step = _as_step(step)  # numpy integers; anything else is skipped by the sender
        if step >= 0:
            self._step = step
        ev = [step, time.time() if ts is None else ts, kind, metrics.copy()
              if type(metrics) is dict else metrics, tags]
        q = self._q
        if len(q) >= self.max_queue and not self._make_room():
            return
        q.append(ev)
        if len(q) >= self.batch_size:
            self._wake.set()

    def log_deferred(self, build, args: tuple, kind: str = "train") -> None:
        """Queue an event at the next step whose metrics are ``build(*args)``, called on the
        sender thread. For hot paths (the ASGI middleware): the caller's thread pays for a
        tuple, not a dict and its numbers. ``build`` must be registered with
        :func:`deferred` and return a metrics dict; if it raises, the event counts as
        ``invalid``."""
        step = self._step = self._step + 1
        q = self._q
        if len(q) >= self.max_queue and not self._make_room():
            return
        q.append([step, time.time(), kind, (build, args), None])
        if len(q) >= self.batch_size:
            self._wake.set()

    def _make_room(self) -> bool:
        """The queue is full: count a drop; False if the new event is the one dropped."""
        self._dropped += 1
        if self._drop_newest:
            return False
        try:
            self._q.popleft()
        except IndexError:
            pass
        return True

    @property
    def step(self) -> int:
        """The step of the last logged event."""
        return self._step

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued (and spooled) so far is delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while self._q or self._inflight is not None or self.spool:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)
            self._wake.set()
        return True

    def close(self, timeout: float = 10.0, end: bool = True) -> None:
        """Stop helpers, send an end-of-run marker (unless ``end=False``), flush, stop the
        sender. Safe to call twice.

        What cannot be delivered within ``timeout`` is written to the spool (if any) and
        sent by the next monitor of this run; otherwise it is reported as undelivered.
        """
        if self._closed or self._closing:
            return
        for extra in self._extras:
            try:
                extra.stop()
            except Exception as exc:  # a helper must never break close()
                log.debug("telltale: stopping %r failed: %s", extra, exc)
        if end:
            self._q.append([self._step, time.time(), "end", {}, None])
        ok = self.flush(timeout)
        self._closing = True  # the sender spills what is left to the spool and exits
        self._wake.set()
        self._thread.join(timeout=getattr(self.transport, "max_send_seconds", 2.0) + 1.0)
        self._closed = True
        if self._thread.is_alive():  # stuck in a send: leave it the spool, report the rest
            log.warning("telltale: run %s: the sender is still busy at close; %d events may "
                        "be lost", self.run, len(self._q) + len(self._inflight or ()))
            _live.discard(self)
            return
        self.transport.close()
        _live.discard(self)
        left = len(self._q) + len(self._inflight or ())
        spool = self.spool
        if spool is not None:
            if spool:
                log.warning("telltale: run %s closed with %d events kept in the spool %s; the "
                            "next telltale.init(run=%r) sends them. Last transport error: %s",
                            self.run, spool.spooled_events - self._replayed, spool.path,
                            self.run, self._last_error)
            if spool.dropped_events:
                log.warning("telltale: run %s dropped %d events because its spool was full "
                            "(max %d bytes)", self.run, spool.dropped_events, spool.max_bytes)
            spool.close()
        if left or (not ok and spool is None):
            log.warning("telltale: run %s closed with %d events undelivered; last transport "
                        "error: %s", self.run, left, self._last_error)
        if self._dropped:
            log.warning("telltale: run %s dropped %d events because its queue (max %d) was "
                        "full (overflow policy %s)", self.run, self._dropped, self.max_queue,
                        self.overflow)

    def stats(self) -> dict:
        """Counters: sent, queued, dropped (queue overflow), spooled, replayed, redacted, ..."""
        queued = len(self._q) + len(self._inflight or ())
        sp = self.spool
        has = sp is not None
        return {"run": self.run, "sent": self._sent, "queued": queued,
                "dropped": self._dropped + (sp.dropped_events if has else 0),
                "dropped_queue": self._dropped,
                "dropped_spool": sp.dropped_events if has else 0,
                "spooled": sp.spooled_events if has else 0,
                "spool_pending_bytes": sp.pending_bytes if has else 0,
                "replayed": self._replayed,
                "redacted": self._redacted, "invalid": self._invalid,
                "dropped_tags": sorted(self.privacy.dropped_tags),
                "dropped_metrics": self.privacy.dropped_metrics,
                "send_failures": self._failures, "last_error": self._last_error}

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- helpers (see telltale.producers.inference / system / watch) --------------

    def timer(self, **fields):
        """Context manager timing one request: logs ``latency_ms`` and ``error`` (kind infer)."""
        from telltale.producers.inference import Timer

        return Timer(self, **fields)

    def timed(self, fn=None):
        """Decorator form of :meth:`timer`."""
        from telltale.producers.inference import timed

        return timed(self)(fn) if fn is not None else timed(self)

    def llm(self, prompt_tokens: int | None = None):
        """Context manager for one LLM request: tokens, time to first token, tokens/s."""
        from telltale.producers.inference import LLMRequest

        return LLMRequest(self, prompt_tokens=prompt_tokens)

    # -- sender thread ------------------------------------------------------------

    def _warn_once(self, key: str, msg: str, *args) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _clean(self, raw: list) -> dict | None:
        """An event dict for the wire from a queued record, or None if nothing is left.

        The usual event (int step, float ts, numbers under names this monitor has already
        let through, no per-call tags) takes a fast path: ``log()`` copied its metrics,
        so the dict is shipped as it is (the full checks cost ~2 µs per event of the
        sender's time, which a trainer's thread waits for on the GIL)."""
        step, ts, kind, metrics, tags = raw
        if type(metrics) is tuple and len(metrics) == 2 \
                and type(metrics[0]) is FunctionType and metrics[0] in _DEFERRED:
            try:
                metrics = metrics[0](*metrics[1])
            except Exception as exc:  # a bug in a builder must not stop the sender
                self._invalid += 1
                self._warn_once("deferred", "telltale: building an event failed: %r; event "
                                "skipped", exc)
                return None
        if type(metrics) is dict and type(step) is int and type(ts) is float \
                and not tags and kind in KINDS and step >= 0 and ts - ts == 0.0 \
                and 0 < len(metrics) <= MAX_METRICS_PER_EVENT:
            names = self._names
            for k, v in metrics.items():
                if k not in names or (type(v) is not float and type(v) is not int):
                    break
            else:
                if self.tags:
                    return {"step": step, "ts": ts, "kind": kind, "metrics": metrics,
                            "tags": self.tags}
                return {"step": step, "ts": ts, "kind": kind, "metrics": metrics}
        return self._clean_checked(step, ts, kind, metrics, tags)

    def _clean_checked(self, step, ts, kind, metrics, tags) -> dict | list | None:
        """:meth:`_clean` with every check; remembers the numeric names it let through."""
        if not isinstance(metrics, dict):
            self._invalid += 1
            self._warn_once("metrics", "telltale: log() needs a dict of metrics, got %s; "
                            "event skipped", type(metrics).__name__)
            return None
        if kind not in KINDS or isinstance(step, bool) or not isinstance(step, int) \
                or step < 0 or not isinstance(ts, int | float) or not math.isfinite(ts):
            self._invalid += 1
            self._warn_once("event", "telltale: event skipped: kind must be one of %s, step a "
                            "non-negative int and ts finite Unix seconds (got %r, %r, %r)",
                            sorted(KINDS), kind, step, ts)
            return None
        before = self.privacy.dropped_metrics
        m, redacted, invalid = self.privacy.metrics(metrics)
        if self.privacy.dropped_metrics > before:
            self._warn_once("names", "telltale: metric names outside the metric-name policy "
                            "are not shipped (%d dropped so far; names not shown)",
                            self.privacy.dropped_metrics)
        if redacted:
            self._redacted += redacted
            self._warn_once("text", "telltale: text metric values are not shipped (redacted: "
                            "%d so far); log numbers, or pass a text hook to init()", redacted)
        if invalid:
            self._invalid += invalid
            self._warn_once("invalid", "telltale: metric values must be numbers with names of "
                            "1..128 characters; %d skipped", invalid)
        names = self._names
        if len(names) < MAX_KNOWN_NAMES:
            for k, v in metrics.items():
                if (type(v) is float or type(v) is int) and k in m and type(k) is str:
                    names.add(k)
        if not m and kind != "end":
            return None
        ev = {"step": step, "ts": ts, "kind": kind, "metrics": m}
        if tags:
            ev["tags"] = {**self.tags, **self.privacy.tags(tags)}
        elif self.tags:
            ev["tags"] = self.tags
        if len(m) > MAX_METRICS_PER_EVENT:
            return _split(ev)
        return ev

    def _take(self) -> list[dict]:
        q, batch = self._q, []
        clean = self._clean
        while q and len(batch) < self.batch_size:
            ev = clean(q.popleft())
            if ev is None:
                continue
            if isinstance(ev, list):
                batch.extend(ev)
            else:
                batch.append(ev)
        return batch

    def _run(self) -> None:
        """Wake every ``linger`` s, or when a batch is full. While each wake finds a busy
        queue (``BUSY`` events or more) the wait doubles up to ``max_linger``: a caller
        logging at 1 kHz pays for two large batches a second instead of twenty small ones
        (the embedded pipeline's cost is mostly per batch)."""
        backoff = self.retry_backoff
        delay = self.linger
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._closing:
                self._finish()
                return
            busy = len(self._q) >= BUSY
            try:
                ok = self._pump()
            except Exception as exc:  # a bug or a disk error must not kill the sender
                self._failed(exc)
                self._inflight = None
                self._warn_once("sender", "telltale: sender error (will retry): %r", exc)
                ok = False
            if ok:
                backoff = self.retry_backoff
                delay = min(delay * 2, self.max_linger) if busy else self.linger
            else:
                delay = backoff
                backoff = min(backoff * 2, self.max_backoff)

    def _failed(self, exc: Exception) -> None:
        """Count a failed send; the first one (and the first refusal of the credentials or
        ACLs) is logged at once with its reason, not only at close."""
        self._failures += 1
        self._last_error = reason = str(exc)
        refused = any(w in reason for w in ("credentials", "may not", "Authorization",
                                            "authentication"))
        self._warn_once("refused" if refused else "send", "telltale: run %s: cannot send to "
                        "%s: %s. Events are kept%s and sent once this is fixed; this is "
                        "logged once, see Monitor.stats()['last_error']", self.run,
                        getattr(self.transport, "topic", "the transport"), reason,
                        " in the spool" if self.spool is not None else " in memory")

    def _pump(self) -> bool:
        """Send the spool, then the queue; False when the transport failed."""
        spool = self.spool
        while spool:
            item = spool.peek()
            if item is None:
                break
            n, payload, line_len = item
            try:
                self.transport.send(self.run, payload)
            except Exception as exc:
                self._failed(exc)
                self._spill()
                return False
            spool.advance(line_len)
            self._replayed += n
            self._sent += n
        while self._q:
            self._inflight = []  # set before popping, so flush() never sees a gap
            batch = self._inflight = self._take()
            parts = _encode(self.run, batch) if batch else []
            for i, (events, payload) in enumerate(parts):
                try:
                    self.transport.send(self.run, payload)
                except Exception as exc:  # keep the rest: spool it, or requeue it
                    self._failed(exc)
                    rest = parts[i:]
                    if spool is not None:
                        for ev_part, p in rest:
                            spool.append(p, len(ev_part))
                        self._inflight = None
                        self._spill()
                    else:
                        self._q.extendleft(reversed([_raw(e) for ev_part, _ in rest
                                                     for e in ev_part]))
                        self._inflight = None
                    return False
                self._sent += len(events)
            self._inflight = None
        return True

    def _spill(self) -> None:
        """Move everything queued to the spool (keeps order, frees memory during outages)."""
        spool = self.spool
        if spool is None:
            return
        while self._q:
            self._inflight = []
            batch = self._inflight = self._take()
            for events, payload in (_encode(self.run, batch) if batch else []):
                spool.append(payload, len(events))
            self._inflight = None

    def _finish(self) -> None:
        """Closing: spool what is left (after what is already spooled), or try once more."""
        if self.spool is None:
            return
        if self.spool or not self._pump():
            self._spill()


_DEFERRED: set = set()  # functions Monitor.log_deferred may be given


def deferred(build):
    """Register ``build`` (a function returning a metrics dict) for
    :meth:`Monitor.log_deferred`; returns it."""
    _DEFERRED.add(build)
    return build


def _as_step(step) -> int:
    """An integer step from an int-like value (e.g. numpy.int64); -1 if it is not one."""
    if isinstance(step, bool):
        return -1
    try:
        return operator.index(step)
    except TypeError:
        return -1


def _raw(ev: dict) -> list:
    return [ev["step"], ev["ts"], ev["kind"], ev["metrics"], ev.get("tags")]


def _split(ev: dict) -> list[dict]:
    """Events with too many metrics become several events of the same step."""
    items = list(ev["metrics"].items())
    out = []
    for i in range(0, len(items), MAX_METRICS_PER_EVENT):
        out.append({**ev, "metrics": dict(items[i:i + MAX_METRICS_PER_EVENT])})
    return out


def _encode_batch(run: str, batch: list[dict]) -> bytes:
    """:func:`~telltale.schema.encode_batch`, through orjson when it is installed. orjson
    writes NaN and infinities as ``null``, so such a batch (``:null`` in the output, which
    no finite number makes) is encoded again by json, which keeps them as tokens."""
    if orjson is not None:
        try:
            payload = orjson.dumps({"schema": SCHEMA, "run": run, "events": batch})
        except (TypeError, ValueError):  # e.g. an int beyond 64 bits
            return encode_batch(run, batch)
        if b":null" not in payload:
            return payload
    return encode_batch(run, batch)


def _encode(run: str, batch: list[dict]) -> list[tuple[list[dict], bytes]]:
    """One payload, or several if the batch would exceed the message limit."""
    payload = _encode_batch(run, batch)
    if len(payload) <= MAX_MESSAGE_BYTES or len(batch) == 1:
        return [(batch, payload)]
    mid = len(batch) // 2
    return _encode(run, batch[:mid]) + _encode(run, batch[mid:])


_live: weakref.WeakSet[Monitor] = weakref.WeakSet()


@atexit.register
def _close_all(timeout: float = 5.0) -> None:
    for m in list(_live):
        try:
            m.close(timeout=timeout)
        except Exception as exc:  # exit must go on
            log.warning("telltale: closing run %s failed: %s", m.run, exc)
