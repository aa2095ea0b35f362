"""InfluxDB 1.8: every read and write Telltale makes goes through here.

- writes: :class:`AsyncInfluxSink` sends line protocol (``telltale/lineprotocol.py``) in
  batches through influxdb-client's v2-compatible API; :class:`PointsRefused` is InfluxDB
  refusing the data itself (a data error), anything else an outage;
- InfluxQL over HTTP: :func:`influx_query` (``telltale doctor``, the worker's start-up check),
  :func:`first_series` (the dashboard's InfluxDB source, the tests), :func:`ensure_database`;
- :func:`explain_influx_status`: the one line for an HTTP error status.

Every request carries the configured credentials (``TELLTALE_INFLUX_TOKEN``, user:password
for InfluxDB 1.8) and uses the system's CAs for an https URL. No message built here
contains a secret.

Measurements (see README "Data in InfluxDB"): ``metrics``, ``window_stats``, ``scores``,
``alerts``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from telltale.access import AccessError
from telltale.config import Config
from telltale.lineprotocol import Encoder

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


class QueryFailed(RuntimeError):
    """InfluxDB answered, but refused the InfluxQL statement (``error``: its message)."""

    def __init__(self, error: str, q: str):
        super().__init__(f"InfluxDB query failed: {error} ({q})")
        self.error = error


def _influx_message(body) -> str:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body)["error"]
    except (ValueError, TypeError, KeyError):
        return str(body or "").strip()[:2000]


# -- HTTP -----------------------------------------------------------------------------


def _http(cfg: Config, path: str, params: dict, *, form: bool = False,
          body: bytes | None = None, timeout: float = 10.0):
    """Send one request to InfluxDB with the configured credentials; returns the open
    response. ``form``: POST ``params`` as the body; ``body``: POST it, ``params`` in the
    URL; else a GET. HTTP errors and unreachable servers raise as urllib raises them."""
    enc = urllib.parse.urlencode(params)
    if form:
        req = urllib.request.Request(f"{cfg.influx_url}{path}", data=enc.encode(),
                                     method="POST")
    elif body is not None:
        req = urllib.request.Request(f"{cfg.influx_url}{path}?{enc}", data=body, method="POST")
    else:
        req = urllib.request.Request(f"{cfg.influx_url}{path}?{enc}")
    if cfg.influx_token:
        req.add_header("Authorization", f"Token {cfg.influx_token}")
    return urllib.request.urlopen(req, timeout=timeout)


def explain_influx_status(cfg: Config, status: int) -> str:
    """One line for an HTTP error status from InfluxDB."""
    where = f"InfluxDB at {cfg.influx_url}"
    if status == 401:
        if not cfg.influx_token:
            return (f"{where} needs credentials: set TELLTALE_INFLUX_TOKEN to user:password "
                    "(or TELLTALE_INFLUX_TOKEN_FILE to a file holding it)")
        return (f"{where} rejected the credentials (HTTP 401): check TELLTALE_INFLUX_TOKEN "
                "(user:password) or TELLTALE_INFLUX_TOKEN_FILE")
    if status == 403:
        return (f"{where} refused the request (HTTP 403): the user in TELLTALE_INFLUX_TOKEN "
                f"lacks the privilege (database {cfg.influx_db})")
    return f"{where} answered HTTP {status}: check TELLTALE_INFLUX_URL"


def ping(cfg: Config, timeout: float = 5.0) -> str:
    """The server's version (``/ping``); OSError when it does not answer."""
    with _http(cfg, "/ping", {}, timeout=timeout) as resp:
        return resp.headers.get("X-Influxdb-Version", "?")


def influx_query(cfg: Config, q: str, db: str | None = None, post: bool = False,
                 timeout: float = 10.0) -> list[dict]:
    """Run InfluxQL with the configured credentials; returns ``results``.

    Raises :class:`AccessError` for an unreachable server or rejected credentials.
    """
    params = {"q": q, "epoch": "ns", **({"db": db} if db else {})}
    try:
        with _http(cfg, "/query", params, form=post, timeout=timeout) as resp:
            doc = json.load(resp)
    except urllib.error.HTTPError as exc:
        raise AccessError(explain_influx_status(cfg, exc.code)) from None
    except (OSError, ValueError) as exc:
        raise AccessError(f"InfluxDB at {cfg.influx_url} is not reachable "
                          f"({type(exc).__name__}: {getattr(exc, 'reason', exc)}): check "
                          "TELLTALE_INFLUX_URL or start it (scripts/services.sh start)") from None
    return doc.get("results", [])


def first_series(cfg: Config, q: str, db: str | None = None,
                 timeout: float = 30.0) -> list[dict]:
    """The series of the first statement's result in ``db`` (default: the configured
    database; ``[]`` when nothing matched). :class:`QueryFailed` when InfluxDB refuses the
    statement, :class:`AccessError` as :func:`influx_query`."""
    results = influx_query(cfg, q, db=db or cfg.influx_db, timeout=timeout)
    res = results[0] if results else {}
    if "error" in res:
        raise QueryFailed(res["error"], q)
    return res.get("series", [])


def check_influx(cfg: Config) -> None:
    """Authenticate once against InfluxDB; raise :class:`AccessError` with the reason if not."""
    influx_query(cfg, "SHOW DATABASES")


def ensure_database(cfg: Config) -> None:
    """Create the database through InfluxQL (InfluxDB 1.8) if it is missing. A user without
    admin rights (403) is fine when the database exists and it may write there."""
    try:
        with _http(cfg, "/query", {"q": f'CREATE DATABASE "{cfg.influx_db}"'}, form=True) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 403:
            return _check_may_write(cfg)
        raise AccessError(explain_influx_status(cfg, exc.code)) from None
    except OSError as exc:
        raise ConnectionError(f"InfluxDB at {cfg.influx_url} is not reachable ({exc}); "
                              "check TELLTALE_INFLUX_URL or start it "
                              "(scripts/services.sh start)") from None


def _check_may_write(cfg: Config) -> None:
    """An empty write: 204 when the database exists and the user may write to it."""
    try:
        with _http(cfg, "/write", {"db": cfg.influx_db}, body=b"") as resp:
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


# -- writes ---------------------------------------------------------------------------


class AsyncInfluxSink:
    """Asynchronous writer for the Faust worker (influxdb-client's aiohttp client)."""

    def __init__(self, cfg: Config, batch: int = 10_000):
        self.cfg, self.batch = cfg, batch
        self.client: Any = None  # influxdb-client's InfluxDBClientAsync, made by start()

    async def start(self) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        self.client = InfluxDBClientAsync(url=self.cfg.influx_url, token=self.cfg.influx_token,
                                          org=self.cfg.influx_org, timeout=30_000)
        self.write_api = self.client.write_api()

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

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
