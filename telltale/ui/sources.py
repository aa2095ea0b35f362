"""Where the dashboard's data comes from: the local store (embedded mode) or InfluxDB.

Both sources hand :func:`~telltale.ui.data.build_view` the same thing: a run's points per
measurement (``{"measurement", "tags", "fields", "time"}`` dicts, as the local store writes
them) and its alert records; both list runs with :func:`~telltale.ui.data.run_summary`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict

from telltale.access import AccessError
from telltale.config import Config
from telltale.sinks.influx import QueryFailed, first_series
from telltale.ui.data import DataError, build_view, run_summary, sort_runs

MEASUREMENTS = ("metrics", "window_stats", "scores", "alerts")
LIVE_SECONDS = 10.0  # a run is "live" while new data arrived this recently


class Liveness:
    """A run is live while its data grew in the last LIVE_SECONDS, as seen by this source.

    One clock for the run list, the run view and the API: a run is keyed by the time of
    its last data point; the first sight of a run is not taken for growth (old data read at
    start-up is idle until it grows again).
    """

    def __init__(self):
        self._seen: dict[str, tuple[float, float]] = {}  # run -> (last data time, wall time)

    def status(self, run: str, last_ts: float | None) -> str:
        now = time.time()
        prev = self._seen.get(run)
        if prev is None:
            self._seen[run] = (last_ts, 0.0)
        elif prev[0] != last_ts:
            self._seen[run] = (last_ts, now)
        return "live" if now - self._seen[run][1] < LIVE_SECONDS else "idle"



class LocalSource:
    """Reads the embedded mode's local store (``<dir>/<measurement>.jsonl``), incrementally.

    Each poll reads only what was appended since the last one; a truncated file (a new
    demo in the same directory) is read again from the start.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self._lock = threading.Lock()
        self._files: dict[str, tuple[int, int]] = {}  # name -> (inode, offset)
        self.live = Liveness()
        self._reset()

    def _reset(self) -> None:
        self.points: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        self.alerts: dict[str, list[dict]] = defaultdict(list)
        # run -> [first time, last time, step at last time] of its metric points: the
        # store's lines are in write order (blocks per rank and kind), not in time order
        self.summary: dict[str, list] = {}

    def describe(self) -> str:
        return f"local store {self.directory}"

    def _read_new(self, name: str) -> list[dict]:
        path = os.path.join(self.directory, f"{name}.jsonl")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return []
        ino, off = self._files.get(name, (st.st_ino, 0))
        if ino != st.st_ino or st.st_size < off:
            raise _Truncated
        out = []
        with open(path, "rb") as f:
            f.seek(off)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next poll
        for line in data[:end].splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        self._files[name] = (st.st_ino, off + end)
        return out

    def refresh(self) -> None:
        with self._lock:
            if not os.path.isdir(self.directory):
                raise DataError(f"no local store at {self.directory}: run 'telltale demo' "
                                "or pass --store-dir DIR (where your runs' data is)")
            try:
                self._refresh()
            except _Truncated:
                self._files.clear()
                self._reset()
                self._refresh()

    def _refresh(self) -> None:
        for m in MEASUREMENTS:
            for p in self._read_new(m):
                run = p.get("tags", {}).get("run")
                if run:
                    self.points[run][m].append(p)
                    if m == "metrics":
                        self._summarize(run, p)
        for a in self._read_new("alerts.log"):
            if a.get("run"):
                self.alerts[a["run"]].append(a)

    def _summarize(self, run: str, p: dict) -> None:
        t, step = p["time"], p["fields"].get("step")
        s = self.summary.get(run)
        if s is None:
            self.summary[run] = [t, t, step]
            return
        s[0] = min(s[0], t)
        if t > s[1] or (t == s[1] and step is not None and (s[2] is None or step > s[2])):
            s[1], s[2] = t, step

    def runs(self) -> list[dict]:
        self.refresh()
        with self._lock:
            out = [run_summary(run, step, len(self.points[run]["metrics"]), t0 / 1e9,
                                t1 / 1e9, self.alerts.get(run, []),
                                self.live.status(run, t1))
                   for run, (t0, t1, step) in self.summary.items()]
            return sort_runs(out)

    def alert_counts(self) -> dict[str, int]:
        """Alert records per run: the page's cheap poll for "something fired"."""
        self.refresh()
        with self._lock:
            return {run: len(a) for run, a in self.alerts.items()}

    def run_view(self, run: str, k: float = 3.0) -> dict | None:
        self.refresh()
        with self._lock:
            per = self.points.get(run)
            if not per or not per.get("metrics"):
                return None
            pts = {m: list(v) for m, v in per.items()}
            alerts = list(self.alerts.get(run, []))
            status = self.live.status(run, self.summary[run][1])
        return build_view(run, pts, alerts, k=k, status=status)


class _Truncated(Exception):
    pass


class InfluxSource:
    """Reads InfluxDB 1.8 with InfluxQL over HTTP (the same queries Chronograf runs)."""

    def __init__(self, cfg: Config):
        if not cfg.influx_url:
            raise DataError("no InfluxDB configured: set TELLTALE_INFLUX_URL or pass "
                            "--influx-url (or --store-dir for the embedded local store)")
        self.cfg = cfg
        self.live = Liveness()

    def describe(self) -> str:
        return f"InfluxDB {self.cfg.influx_url} database {self.cfg.influx_db}"

    def query(self, q: str) -> list[dict]:
        """Series of the first statement's result (``[]`` when nothing matched)."""
        try:
            return first_series(self.cfg, q, timeout=30)
        except (AccessError, QueryFailed) as exc:
            raise DataError(str(exc)) from None

    def _points(self, measurement: str, where: str) -> list[dict]:
        out = []
        for s in self.query(f'SELECT * FROM "{measurement}" WHERE {where} GROUP BY *'):
            tags = s.get("tags", {})
            cols = s["columns"]
            for row in s["values"]:
                fields = {c: v for c, v in zip(cols[1:], row[1:], strict=True) if v is not None}
                out.append({"measurement": measurement, "tags": tags, "fields": fields,
                            "time": row[0]})
        out.sort(key=lambda p: p["time"])
        return out

    def runs(self) -> list[dict]:
        first = {s["tags"]["run"]: s["values"][0] for s in self.query(
            'SELECT first("step"), count("step") FROM "metrics" GROUP BY "run"')}
        last = {s["tags"]["run"]: s["values"][0] for s in self.query(
            'SELECT last("step") FROM "metrics" GROUP BY "run"')}
        alerts = defaultdict(list)
        for p in self._points("alerts", "time > 0"):
            alerts[p["tags"]["run"]].append(_alert_from_point(p))
        out = []
        for run, (t0, _, n) in first.items():
            t1, step = last[run]
            out.append(run_summary(run, step, n, t0 / 1e9, t1 / 1e9, alerts[run],
                                    self.live.status(run, t1)))
        return sort_runs(out)

    def alert_counts(self) -> dict[str, int]:
        """Alert records per run (one small query on the alerts measurement)."""
        return {s["tags"]["run"]: s["values"][0][1] for s in self.query(
            'SELECT count("step") FROM "alerts" GROUP BY "run"')}

    def run_view(self, run: str, k: float = 3.0) -> dict | None:
        where = f'"run" = {_quote(run)}'
        pts = {m: self._points(m, where) for m in ("metrics", "window_stats", "scores")}
        if not pts["metrics"]:
            return None
        alerts = [_alert_from_point(p) for p in self._points("alerts", where)]
        t1 = max(p["time"] for p in pts["metrics"])
        return build_view(run, pts, alerts, k=k, status=self.live.status(run, t1))


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _alert_from_point(p: dict) -> dict:
    t, f = p["tags"], p["fields"]
    a = {"id": f.get("id"), "run": t.get("run"), "metric": t.get("metric"),
         "rank": t.get("rank", "0"), "detector": t.get("detector"),
         "severity": t.get("severity"), "step": f.get("step"), "score": f.get("score"),
         "message": f.get("message", ""), "ts": p["time"] / 1e9}
    for key in ("state", "explanation", "cause", "action", "first_step", "last_step"):
        if key in f or key in t:
            a[key] = f.get(key, t.get(key))
    if f.get("contributors"):
        try:
            a["contributors"] = json.loads(f["contributors"])
        except ValueError:
            pass
    if f.get("resolved_because"):
        a["stats"] = {"resolved_because": f["resolved_because"]}
    return a
