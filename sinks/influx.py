"""InfluxDB sink (influxdb-client; InfluxDB 1.8 through its v2-compatible API).

Measurements (see README "Data in InfluxDB"): ``metrics``, ``window_stats``, ``scores``,
``alerts``. Points are written as line protocol in batches.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from math import isfinite

from telltale.config import Config
from telltale.records import Point, PointBlock

log = logging.getLogger(__name__)


def _esc_key(s: str) -> str:
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def _to_line_slow(p: Point) -> str:
    tags = "".join(f",{_esc_key(k)}={_esc_key(v)}" for k, v in sorted(p.tags.items()) if v != "")
    fields = ",".join(f"{_esc_key(k)}={_field(v)}" for k, v in p.fields.items())
    return f"{_esc_key(p.measurement)}{tags} {fields} {p.time_ns}"


# Escaped series prefixes and field keys repeat for every point of a series: cache them
# (bounded; cleared when full) so a line costs one dict lookup plus its fields.
_CACHE_MAX = 100_000
_prefixes: dict[tuple, str] = {}
_keys: dict[str, str] = {}


def _prefix(measurement: str, tags: dict) -> str:
    ck = (measurement, *tags.items())
    prefix = _prefixes.get(ck)
    if prefix is None:
        if len(_prefixes) >= _CACHE_MAX:
            _prefixes.clear()
        tt = "".join(f",{_esc_key(k)}={_esc_key(v)}" for k, v in sorted(tags.items()) if v != "")
        prefix = _prefixes[ck] = f"{_esc_key(measurement)}{tt} "
    return prefix


def block_lines(b: PointBlock) -> list[str]:
    """Line protocol for a block of points, the same lines as ``to_line`` of its points."""
    prefix = _prefix(b.measurement, b.tags)
    keys = [_esc_key(n) for n in b.names]
    full = prefix + "".join(f"{k}=%r," for k in keys) + "step=%di %d"  # no value left out
    out = []
    for vals, step, t in zip(zip(*b.columns, strict=True), b.steps, b.times_ns, strict=True):
        if all(map(isfinite, vals)):
            out.append(full % (*vals, step, t))
            continue
        parts = [f"{k}={v!r}" for k, v in zip(keys, vals, strict=True) if isfinite(v)]
        parts.append(f"step={step}i")
        out.append(f"{prefix}{','.join(parts)} {t}")
    return out


def to_line(p: Point) -> str:
    """Line protocol for one point (tags sorted, as InfluxDB prefers)."""
    prefix = _prefix(p.measurement, p.tags)
    parts = []
    keys = _keys
    for k, v in p.fields.items():
        ek = keys.get(k)
        if ek is None:
            if len(keys) >= _CACHE_MAX:
                keys.clear()
            ek = keys[k] = _esc_key(k)
        t = type(v)
        if t is float:
            parts.append(f"{ek}={v!r}")
        elif t is int:
            parts.append(f"{ek}={v}i")
        else:
            parts.append(f"{ek}={_field(v)}")
    return f"{prefix}{','.join(parts)} {p.time_ns}"


def ensure_database(cfg: Config) -> None:
    """Create the database through InfluxQL (InfluxDB 1.8) if it is missing. A user without
    admin rights (403) is fine when the database exists and it may write there."""
    q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{cfg.influx_db}"'}).encode()
    req = urllib.request.Request(f"{cfg.influx_url}/query", data=q, method="POST")
    if cfg.influx_token:
        req.add_header("Authorization", f"Token {cfg.influx_token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        from telltale.access import AccessError, explain_influx_status

        if exc.code == 403:
            return _check_may_write(cfg)
        raise AccessError(explain_influx_status(cfg, exc.code)) from None
    except OSError as exc:
        raise ConnectionError(f"InfluxDB at {cfg.influx_url} is not reachable ({exc}); "
                              "check TELLTALE_INFLUX_URL or start it "
                              "(scripts/services.sh start)") from None


def _check_may_write(cfg: Config) -> None:
    """An empty write: 204 when the database exists and the user may write to it."""
    from telltale.access import AccessError

    url = f"{cfg.influx_url}/write?" + urllib.parse.urlencode({"db": cfg.influx_db})
    req = urllib.request.Request(url, data=b"", method="POST")
    if cfg.influx_token:
        req.add_header("Authorization", f"Token {cfg.influx_token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        where = f"InfluxDB at {cfg.influx_url}"
        if exc.code == 404:
            raise AccessError(f"{where} has no database {cfg.influx_db!r} and the user in "
                              "TELLTALE_INFLUX_TOKEN may not create it: ask an admin to run "
                              f"CREATE DATABASE \"{cfg.influx_db}\", or check "
                              "TELLTALE_INFLUX_DB") from None
        raise AccessError(f"{where} refused the worker's writes (HTTP {exc.code}): the user in "
                          f"TELLTALE_INFLUX_TOKEN needs WRITE on {cfg.influx_db!r} (GRANT "
                          f"WRITE ON \"{cfg.influx_db}\" TO <user>)") from None
    except OSError as exc:
        raise ConnectionError(f"InfluxDB at {cfg.influx_url} is not reachable ({exc})") from None


class AsyncInfluxSink:
    """Asynchronous writer for the Faust worker (influxdb-client's aiohttp client)."""

    def __init__(self, cfg: Config, batch: int = 10_000):
        self.cfg, self.batch = cfg, batch
        self.client = None
        self.written = 0

    async def start(self) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.client = InfluxDBClientAsync(url=self.cfg.influx_url, token=self.cfg.influx_token,
                                          org=self.cfg.influx_org, timeout=30_000)
        self.write_api = self.client.write_api()

    async def write_points(self, points: list[Point]) -> None:
        await self.write_lines([to_line(p) for p in points])

    async def write_lines(self, lines: list[str]) -> None:
        """Write line-protocol lines in batches; raises when InfluxDB does not take them."""
        if self.client is None:
            await self.start()
        for i in range(0, len(lines), self.batch):
            # one string per request: a list is serialised by the client element by element
            await self.write_api.write(bucket=self.cfg.influx_bucket,
                                       record="\n".join(lines[i:i + self.batch]))
        self.written += len(lines)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
