"""Versioned event schema: what producers send and what the pipeline accepts.

A Kafka message (or an embedded bus item) carries one *batch* of one run's events::

    {"schema": "telltale/1", "run": "exp-1",
     "events": [{"step": 1, "ts": 1795560973.36, "kind": "train",
                 "metrics": {"loss": 2.3, "acc": 0.05}, "tags": {"rank": 0}}]}

A bare event (``{"run": ..., "step": ..., "metrics": {...}}``, the format of the
trainfaults files) is accepted as a batch of one. Non-finite metric values are written
as the bare JSON tokens ``NaN`` / ``Infinity`` (Python's ``json`` default).

Names are decided here, so that whatever is accepted can be stored in InfluxDB exactly as
sent: a run id, metric name or tag name is a non-empty string of at most 128 characters
(a tag value: 256; an empty tag value means no tag) with no control character, no
backslash and no lone surrogate (telltale/lineprotocol.py says why); any other Unicode,
spaces, commas, ``=`` and quotes are fine. Metric names ``time``, ``step`` and
``nonfinite`` and the tag name ``time`` are reserved. ``step`` is below 2**63 and ``ts``
between 1677 and 2262 (InfluxDB's time range). Anything else is rejected with its reason
(the worker puts it on the dead-letter topic).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

try:  # ~3x faster decoding; it refuses NaN tokens and >64-bit integers, json.loads reads them
    from orjson import loads as _fast_loads
except ImportError:  # the worker extra installs it; without it json reads everything
    _fast_loads = None

from telltale.lineprotocol import MAX_TIME_NS, MIN_TIME_NS, RESERVED_KEYS, name_problem

SCHEMA = "telltale/1"
SUPPORTED_SCHEMAS = frozenset({SCHEMA})
KINDS = frozenset({"train", "eval", "infer", "system", "end"})

MAX_MESSAGE_BYTES = 1_000_000
MAX_EVENTS_PER_MESSAGE = 10_000
MAX_METRICS_PER_EVENT = 256
MAX_TAGS_PER_EVENT = 16
MAX_NAME_LEN = 128
MAX_TAG_VALUE_LEN = 256
MAX_STEP = 2**63 - 1  # InfluxDB stores the step as a 64-bit integer
# InfluxDB stores times from 1677-09-21 to 2262-04-11 (int64 ns)
MIN_TS, MAX_TS = MIN_TIME_NS / 1e9 + 1, MAX_TIME_NS / 1e9 - 1
RESERVED_METRICS = {  # metric names that cannot be a field of the `metrics` measurement
    "time": "InfluxDB refuses a field named time",
    "step": "the step of every point is stored under it",
    "nonfinite": "the count of a point's non-finite values is stored under it",
}
RESERVED_TAGS = frozenset(RESERVED_KEYS)


@dataclass(slots=True)
class Event:
    """One step's metrics of one run (and rank)."""

    run: str
    step: int
    ts: float
    kind: str = "train"
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def rank(self) -> str:
        return self.tags.get("rank", "0")

    def to_dict(self) -> dict:
        d = {"run": self.run, "step": self.step, "ts": self.ts, "kind": self.kind,
             "metrics": self.metrics}
        if self.tags:
            d["tags"] = self.tags
        return d


@dataclass(slots=True)
class Rejected:
    """Input that could not be accepted, kept with the reason for the dead-letter topic."""

    reason: str
    raw: object
    run: str | None = None  # the run it came from, when that is known

    def to_dict(self) -> dict:
        raw = self.raw
        if isinstance(raw, bytes | bytearray):
            raw = raw[:MAX_MESSAGE_BYTES].decode("utf-8", "replace")
        elif not isinstance(raw, str):
            raw = dumps(raw)
        if len(raw) > 65536:
            raw = raw[:65536] + "...[truncated]"
        d = {"schema": SCHEMA, "reason": self.reason, "raw": raw}
        if self.run is not None:
            d["run"] = self.run
        return d


class SchemaError(ValueError):
    """An event or message does not follow the schema."""


def dumps(obj) -> str:
    """JSON with non-finite floats as bare tokens (readable by ``json.loads``)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=True)


def encode_batch(run: str, events: list[dict]) -> bytes:
    """Encode one run's events (dicts without ``run``) as one message."""
    return dumps({"schema": SCHEMA, "run": run, "events": events}).encode()


def _name(value, what: str, max_len: int = MAX_NAME_LEN) -> str:
    """A name InfluxDB stores exactly as given (see :func:`name_problem`), else SchemaError."""
    if not isinstance(value, str) or not value:
        raise SchemaError(f"{what} must be a non-empty string, got "
                          f"{type(value).__name__ if value != '' else 'an empty string'}")
    if len(value) > max_len:
        raise SchemaError(f"{what} is {len(value)} characters long (max {max_len})")
    problem = name_problem(value)
    if problem:
        raise SchemaError(f"{what} {value[:80]!r} {problem}")
    return value


def _metric_name(value) -> str:
    _name(value, "metric name")
    if value in RESERVED_METRICS:
        raise SchemaError(f"metric name {value!r} is reserved ({RESERVED_METRICS[value]}); "
                          "log it under another name")
    return value


_GOOD_NAMES: set[str] = set()  # metric names already validated (bounded)


def parse_event(d, run: str | None = None) -> Event:
    """Validate one event dict; ``run`` comes from the batch when the event has none."""
    if type(d) is dict and run is not None and len(d) <= 4 and "run" not in d:
        # the producer's usual event: step, ts, kind?, metrics of floats with known names
        step, ts, metrics = d.get("step"), d.get("ts"), d.get("metrics")
        kind = d.get("kind", "train")
        if type(step) is int and 0 <= step <= MAX_STEP and type(ts) is float \
                and MIN_TS <= ts <= MAX_TS and type(metrics) is dict \
                and kind in KINDS and kind != "end" and 0 < len(metrics) <= MAX_METRICS_PER_EVENT \
                and len(d) == 3 + ("kind" in d):
            good = _GOOD_NAMES
            for k, v in metrics.items():
                if type(v) is not float or k not in good:
                    break
            else:
                return Event(run, step, ts, kind, dict(metrics), {})
    return _parse_event(d, run)


def _parse_event(d, run: str | None) -> Event:
    if not isinstance(d, dict):
        raise SchemaError(f"event must be an object, got {type(d).__name__}")
    run = _name(d.get("run", run), "run")
    step = d.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise SchemaError(f"step must be a non-negative integer below 2**63, got "
                          f"{str(step)[:40]}")
    ts = d.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) \
            or not MIN_TS <= ts <= MAX_TS:  # also NaN and infinities
        raise SchemaError(f"ts must be a finite number of Unix seconds between 1677 and "
                          f"2262 (what InfluxDB stores), got {str(ts)[:40]}")
    kind = d.get("kind", "train")
    if kind not in KINDS:
        raise SchemaError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    metrics = d.get("metrics", {})
    if not isinstance(metrics, dict):
        raise SchemaError(f"metrics must be an object, got {type(metrics).__name__}")
    if len(metrics) > MAX_METRICS_PER_EVENT:
        raise SchemaError(f"{len(metrics)} metrics in one event (max {MAX_METRICS_PER_EVENT})")
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if k not in _GOOD_NAMES:  # names repeat in every event: validate each once
            _metric_name(k)
            if len(_GOOD_NAMES) < 10_000:
                _GOOD_NAMES.add(k)
        if type(v) is not float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise SchemaError(f"metric {k!r} must be a number, got {type(v).__name__}")
            try:
                v = float(v)
            except OverflowError:  # an integer past the float range
                raise SchemaError(f"metric {k!r} is an integer too large for a float") from None
        out[k] = v
    tags = d.get("tags") or {}
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS_PER_EVENT:
        raise SchemaError(f"tags must be an object of at most {MAX_TAGS_PER_EVENT} entries")
    stags: dict[str, str] = {}
    for k, v in tags.items():
        _name(k, "tag name")
        if k in RESERVED_TAGS:
            raise SchemaError(f"tag name {k!r} is reserved (InfluxDB refuses it)")
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise SchemaError(f"tag {k!r} must be a string or integer, got {type(v).__name__}")
        v = str(v)
        if v == "":
            continue  # an empty tag value is no tag (as in InfluxDB)
        _name(v, f"tag {k!r} value", MAX_TAG_VALUE_LEN)
        if k == "rank" and "|" in v:
            raise SchemaError(f"tag 'rank' value {v[:80]!r} contains '|' (it separates a "
                              "series' metric from its rank)")
        stags[k] = v
    if kind != "end" and not out:
        raise SchemaError("event has no metrics")
    return Event(run=run, step=step, ts=float(ts), kind=kind, metrics=out, tags=stags)


def _loads(raw: bytes | str):
    """``json.loads``, by orjson where it can (what orjson refuses, json decides)."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)
        except ValueError:  # NaN/Infinity tokens, huge integers, lone surrogates, bad JSON
            pass
    return json.loads(raw)


def decode_message(raw: bytes | str) -> tuple[list[Event], list[Rejected]]:
    """Decode one message into valid events and rejected parts (never raises)."""
    size = len(raw)
    if size > MAX_MESSAGE_BYTES:
        return [], [Rejected(f"message is {size} bytes (max {MAX_MESSAGE_BYTES})", raw[:4096])]
    try:
        doc = _loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return [], [Rejected(f"not valid JSON: {exc}", raw)]
    if not isinstance(doc, dict):
        return [], [Rejected(f"message must be a JSON object, got {type(doc).__name__}", raw)]
    if "events" not in doc:
        try:
            return [parse_event(doc)], []
        except SchemaError as exc:
            return [], [Rejected(str(exc), doc)]
    schema = doc.get("schema")
    if schema not in SUPPORTED_SCHEMAS:
        return [], [Rejected(f"unknown schema {schema!r}; this worker reads "
                             f"{sorted(SUPPORTED_SCHEMAS)} (upgrade the worker?)", raw)]
    events_in = doc["events"]
    if not isinstance(events_in, list):
        return [], [Rejected("events must be a list", raw)]
    if len(events_in) > MAX_EVENTS_PER_MESSAGE:
        return [], [Rejected(f"{len(events_in)} events in one message "
                             f"(max {MAX_EVENTS_PER_MESSAGE})", raw[:4096])]
    try:
        run = _name(doc.get("run"), "run")
    except SchemaError as exc:
        return [], [Rejected(str(exc), raw)]
    events, rejected = [], []
    for d in events_in:
        try:
            ev = parse_event(d, run)
        except SchemaError as exc:
            rejected.append(Rejected(str(exc), d, run))
            continue
        if ev.run != run:
            rejected.append(Rejected(f"event run {ev.run!r} differs from batch run {run!r}", d,
                                     run))
            continue
        events.append(ev)
    return events, rejected
