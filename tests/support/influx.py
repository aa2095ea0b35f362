"""InfluxQL queries and counts against the real InfluxDB 1.8."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from telltale.config import Config


def influxql(cfg: Config, q: str) -> list[dict]:
    """Run an InfluxQL query; return the series list of the first statement."""
    from telltale.sinks.influx import QueryFailed, first_series

    try:
        return first_series(cfg, q)
    except QueryFailed as exc:
        raise AssertionError(f"InfluxQL error for {q!r}: {exc.error}") from None


def run_points(cfg: Config, run: str) -> int:
    """Points of ``run`` in the ``metrics`` measurement (-1 while InfluxDB refuses the
    query, e.g. before the database exists)."""
    try:
        s = influxql(cfg, f'SELECT count("step") FROM "metrics" WHERE "run"=\'{run}\'')
    except urllib.error.HTTPError:
        return -1
    return s[0]["values"][0][1] if s else 0


def metric_values(cfg: Config) -> int:
    """Metric values in the ``metrics`` measurement (every field but step / nonfinite)."""
    total = 0
    for s in influxql(cfg, "SELECT count(*) FROM metrics"):
        for col, v in zip(s["columns"], s["values"][0], strict=True):
            if col.startswith("count_") and col not in ("count_step", "count_nonfinite"):
                total += int(v or 0)
    return total


def drop_database(cfg: Config) -> None:
    """Drop ``cfg``'s database."""
    q = urllib.parse.urlencode({"q": f'DROP DATABASE "{cfg.influx_db}"'}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{cfg.influx_url}/query", data=q),
                           timeout=60).read()
