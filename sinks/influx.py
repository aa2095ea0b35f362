"""InfluxDB sink (influxdb-client; InfluxDB 1.8 through its v2-compatible API).

Measurements (see README "Data in InfluxDB"): ``metrics``, ``window_stats``, ``scores``,
``alerts``. Points are written as line protocol in batches.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from telltale.config import Config
from telltale.lineprotocol import Encoder
from telltale.records import Point

log = logging.getLogger(__name__)


_encoder = Encoder()
to_line = _encoder.point  # Line protocol for one point (telltale/lineprotocol.py)
block_lines = _encoder.block  # the lines of a block's points, the same as ``to_line``'s

# InfluxDB answers these when it refuses the data itself (a line it cannot parse, a field
# type conflict, a partial write, a body too large): writing it again cannot help.
# Anything else (401/403/404: credentials or database; 429, 5xx; no answer) is an outage.
REFUSED_STATUS = frozenset({400, 413, 422})


class PointsRefused(Exception):
    """InfluxDB refused (some of) the points of a write, with its message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"InfluxDB refused the write ({status}): {message}")
        self.status, self.message = status, message


def _influx_message(body) -> str:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body)["error"]
    except (ValueError, TypeError, KeyError):
        return str(body or "").strip()[:2000]


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
        """Write lines in requests of ``batch``; raises :class:`PointsRefused` when InfluxDB
        refuses the data (the request's other lines may be written), anything else when
        InfluxDB does not answer or fails."""
        from influxdb_client.rest import ApiException

        if self.client is None:
            await self.start()
        for i in range(0, len(lines), self.batch):
            try:  # one string per request: a list is serialised by the client line by line
                await self.write_api.write(bucket=self.cfg.influx_bucket,
                                           record="\n".join(lines[i:i + self.batch]))
            except UnicodeEncodeError as exc:  # a lone surrogate: no UTF-8 for it
                raise PointsRefused(400, f"not valid UTF-8 ({exc.reason})") from None
            except ApiException as exc:
                if exc.status in REFUSED_STATUS:
                    raise PointsRefused(exc.status, _influx_message(exc.body)) from None
                raise
        self.written += len(lines)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
