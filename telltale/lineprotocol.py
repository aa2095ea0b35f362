"""InfluxDB 1.8 line protocol: escaping, one line per point, and which names it can store.

    measurement[,tag_key=tag_value...] field_key=field_value[,...] time_ns

Escapes, as InfluxDB 1.8 reads them back (checked against the server in
tests/test_lineprotocol.py): a measurement escapes comma and space; tag keys, tag values
and field keys escape comma, ``=`` and space; a string field value is in double quotes
with ``"`` and backslash escaped (a newline inside it is kept as is). These are also
influxdb-client's escapes for every name :func:`name_problem` accepts.

What line protocol cannot carry, so :func:`name_problem` refuses it in a name (run id,
metric name, tag key or value) and the schema dead-letters the event instead of
InfluxDB refusing its points later:

- an empty name (InfluxDB has no empty keys; an empty tag value means "no tag");
- control characters (``\\n`` ends the line; InfluxDB keeps ``\\n`` escaped as the two
  characters backslash and n, so it does not come back as written);
- a backslash (InfluxDB does not unescape it in names: ``a\\`` before a space or a comma
  breaks the line, and ``\\,`` cannot be told from an escaped comma);
- text that is not valid Unicode (a lone surrogate from JSON ``"\\ud800"``: no UTF-8).

A measurement may not begin with ``#`` (the line would be a comment); Telltale's are
fixed names. ``time`` is not a valid tag or field key (InfluxDB refuses the point: see
:data:`RESERVED_KEYS`). A float field that is not finite is left out of its line (as
influxdb-client does): InfluxDB has no NaN or infinity.
"""

from __future__ import annotations

import re

from telltale.records import Point, PointBlock

RESERVED_KEYS = frozenset({"time"})  # InfluxDB 1.8 refuses a tag or field key "time"
# InfluxDB keeps times in int64 ns, minus two sentinels: 1677-09-21 .. 2262-04-11
MIN_TIME_NS = -9223372036854775806
MAX_TIME_NS = 9223372036854775806

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})
_UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\ud800-\udfff]")


def name_problem(s: str) -> str | None:
    """Why ``s`` cannot be stored exactly as an InfluxDB name or tag value, or None."""
    if not s:
        return "is empty"
    m = _UNSTORABLE.search(s)
    if m is None:
        return None
    c = m.group()
    if c == "\\":
        return "contains a backslash (InfluxDB cannot store it in a name)"
    if "\ud800" <= c <= "\udfff":
        return "is not valid Unicode (a lone surrogate, no UTF-8 for it)"
    return f"contains the control character {c!r} at position {m.start()}"


def measurement(s: str) -> str:
    return s.translate(_MEASUREMENT)


def key(s: str) -> str:
    """A tag key, tag value or field key."""
    return s.translate(_KEY)


def string(s: str) -> str:
    """A string field value, quoted."""
    return f'"{s.translate(_STRING)}"'


def field_value(v) -> str | None:
    """A field value; None for a float that is not finite (InfluxDB cannot store it)."""
    t = type(v)
    if t is float:
        return repr(v) if v - v == 0.0 else None
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return f"{v}i"
    if isinstance(v, float):  # a float subclass (numpy.float64)
        return field_value(float(v))
    if isinstance(v, int):
        return f"{int(v)}i"
    return string(str(v))


def line(measurement_: str, tags: dict, fields: dict, time_ns: int) -> str:
    """One line, tags sorted (as InfluxDB prefers), fields in their order; tags with an
    empty value are left out. Not cached: see :class:`Encoder` for the hot path."""
    tt = "".join(f",{key(k)}={key(v)}" for k, v in sorted(tags.items()) if v != "")
    ff = ",".join(f"{key(k)}={fv}" for k, v in fields.items()
                  if (fv := field_value(v)) is not None)
    return f"{measurement(measurement_)}{tt} {ff} {time_ns}"


class Encoder:
    """Line protocol on the worker's hot path: the escaped series prefix and field keys
    repeat for every point of a series, so they are cached (bounded; cleared when full)
    and a line costs a dict lookup plus its fields. Same lines as :func:`line`."""

    def __init__(self, cache_max: int = 100_000):
        self.cache_max = cache_max
        self._prefixes: dict[tuple, str] = {}
        self._keys: dict[str, str] = {}

    def prefix(self, measurement_: str, tags: dict) -> str:
        ck = (measurement_, *tags.items())
        p = self._prefixes.get(ck)
        if p is None:
            if len(self._prefixes) >= self.cache_max:
                self._prefixes.clear()
            tt = "".join(f",{key(k)}={key(v)}" for k, v in sorted(tags.items()) if v != "")
            p = self._prefixes[ck] = f"{measurement(measurement_)}{tt} "
        return p

    def field_key(self, k: str) -> str:
        ek = self._keys.get(k)
        if ek is None:
            if len(self._keys) >= self.cache_max:
                self._keys.clear()
            ek = self._keys[k] = key(k)
        return ek

    def point(self, p: Point) -> str:
        prefix = self._prefixes.get((p.measurement, *p.tags.items()))
        if prefix is None:
            prefix = self.prefix(p.measurement, p.tags)
        keys = self._keys
        parts = []
        for k, v in p.fields.items():
            ek = keys.get(k)
            if ek is None:
                ek = self.field_key(k)
            t = type(v)
            if t is float:
                if v - v == 0.0:  # finite
                    parts.append(f"{ek}={v!r}")
            elif t is int:
                parts.append(f"{ek}={v}i")
            else:
                fv = field_value(v)
                if fv is not None:
                    parts.append(f"{ek}={fv}")
        return f"{prefix}{','.join(parts)} {p.time_ns}"

    def block(self, b: PointBlock) -> list[str]:
        """The lines of a block's points (non-finite values left out), as :meth:`point`."""
        prefix = self.prefix(b.measurement, b.tags)
        keys = [self.field_key(n) for n in b.names]
        full = prefix + "".join(f"{k}=%r," for k in keys) + "step=%di %d"  # no value left out
        out = []
        for vals, step, t in zip(zip(*b.columns, strict=True), b.steps, b.times_ns,
                                 strict=True):
            # all finite unless the sum is not (then each value is checked)
            out.append(full % (*vals, step, t) if 0.0 * sum(vals) == 0.0 else
                       _partial(prefix, keys, vals, step, t))
        return out


def _partial(prefix: str, keys: list[str], vals, step: int, t: int) -> str:
    parts = [f"{k}={v!r}" for k, v in zip(keys, vals, strict=True) if v - v == 0.0]
    parts.append(f"step={step}i")
    return f"{prefix}{','.join(parts)} {t}"
