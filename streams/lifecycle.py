"""Alert lifecycle: detector findings become incidents that fire, update and resolve.

Pure and transport-free, like the processor. An :class:`AlertTracker` keeps its state in
the run's state dict (``state["alerts"]``, JSON-able, bounded by the number of series ×
detectors) and turns each batch's candidates into alert records:

- one incident per (metric, rank, detector) while it is open (deduplication);
- ``firing`` when it opens, ``updated`` when its severity rises, at most every
  ``update_every`` steps while findings continue, or when it re-fires within ``cooldown``
  steps of resolving (same id: a flapping series reopens its incident instead of paging);
- ``resolved`` once the series has been normal for ``resolve_after`` steps (per detector,
  doubled for each reopen, up to 8×; 0 = not before the run ends) or when the run ends;
- a per-run storm guard: at most ``storm_max`` records per ``storm_steps`` steps
  (critical firings always pass); held-back incidents are announced by a later record
  when there is room, and never resolve unannounced.

Time is the step number, so the same events give the same records however batched.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
from dataclasses import dataclass, field
from math import isfinite

import numpy as np

from telltale.records import ALERT_SCHEMA, alert_id
from telltale.streams.explain import calibrate, describe

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}

# steps of normal values after which an incident resolves, per detector; 0 = only when the
# run ends (run rules that give no per-step signal of being back to normal)
RESOLVE_AFTER = {"nonfinite": 20, "zscore": 50, "divergence": 50, "jump": 20, "levelshift": 100,
                 "spikerate": 100, "growth": 150, "overfit": 0, "straggler": 0}


def _abnormal(detector: str, values: np.ndarray, score: np.ndarray | None) -> np.ndarray:
    """Per value: is the series still abnormal for this detector (its score says so)?"""
    if detector == "nonfinite":
        return ~np.isfinite(values)
    if score is None:
        return np.zeros(len(values), dtype=bool)
    s = np.nan_to_num(score, nan=0.0)
    if detector == "zscore":
        return np.abs(s) >= 4.0
    if detector == "divergence":
        return s > 0.5  # the detector's re-arm mark (half of ratio - 1)
    if detector == "levelshift":
        return np.abs(s) > 0.294  # within √1.8 of the reference again = normal
    if detector == "growth":
        return s > 0.01
    if detector == "jump":
        return s > 10.0
    if detector == "spikerate":
        return s > 8.0
    return np.zeros(len(values), dtype=bool)


@dataclass
class AlertPolicy:
    """Lifecycle settings; ``resolve_after`` maps ``detector`` or ``metric-glob:detector``."""

    resolve_after: dict = field(default_factory=dict)
    cooldown: int = 100
    update_every: int = 200
    storm_max: int = 20
    storm_steps: int = 100
    recent_max: int = 256  # resolved incidents remembered for the cooldown (bounded)

    @classmethod
    def from_file(cls, path: str) -> AlertPolicy:
        """Read a JSON file of the same fields (unknown keys are an error)."""
        with open(path) as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: alert policy must be a JSON object")
        names = set(cls.__dataclass_fields__)
        bad = set(doc) - names
        if bad:
            raise ValueError(f"{path}: unknown alert policy keys {sorted(bad)}; "
                             f"known: {sorted(names)}")
        return cls(**doc)

    def resolve_steps(self, metric: str, detector: str) -> int:
        for pat, n in self.resolve_after.items():
            if ":" in pat:
                mpat, det = pat.rsplit(":", 1)
                if det == detector and fnmatch.fnmatchcase(metric.lower(), mpat.lower()):
                    return int(n)
        return int(self.resolve_after.get(detector, RESOLVE_AFTER.get(detector, 50)))


class AlertTracker:
    """firing → updated → resolved over one run's candidates (see the module docstring)."""

    def __init__(self, policy: AlertPolicy | None = None, window_label: str | None = None):
        self.policy = policy or AlertPolicy()
        self.window_label = window_label  # tumbling step window used for context

    @staticmethod
    def new_state() -> dict:
        return {"open": {}, "recent": {}, "win": {}, "bucket": None, "n": 0, "held": 0,
                "last_step": None, "last_ts": None}

    # -- entry points -----------------------------------------------------------

    def process(self, state: dict, candidates: list, seen: dict, window_points=()) -> list[dict]:
        """Records for one batch. ``seen``: series key -> (steps, ts, values, {detector: scores})
        for every series that got values in the batch."""
        al = state.setdefault("alerts", self.new_state())
        run = state["run"]
        closed = self._closed_windows(window_points)
        for steps, ts, _, _ in seen.values():
            if len(steps):
                i = int(np.argmax(steps))
                if al.get("last_step") is None or steps[i] >= al["last_step"]:
                    al["last_step"], al["last_ts"] = int(steps[i]), float(ts[i])
        by_key: dict[str, list] = {}
        for c in candidates:
            by_key.setdefault(f"{c.metric}|{c.rank}|{c.finding.detector}", []).append(c)
        keys = set(by_key)
        for ikey in al["open"]:
            if ikey.rsplit("|", 1)[0] in seen:
                keys.add(ikey)
        # each incident's records come from its own generator; they are merged in (step, key)
        # order and pass the storm guard one by one, so the outcome never depends on batching
        gens = []
        for ikey in sorted(keys):
            metric, rank, det = ikey.rsplit("|", 2)
            cands = sorted(by_key.get(ikey, []), key=lambda c: c.step)
            gens.append(self._advance(run, al, ikey, cands, seen.get(f"{metric}|{rank}"), det,
                                      closed))
        heap = []
        for i, g in enumerate(gens):
            r = next(g, None)
            if r is not None:
                heap.append((r["step"], r["_key"], i, r))
        heapq.heapify(heap)
        out = []
        while heap:
            _, _, i, r = heapq.heappop(heap)
            self._guard(al, r, out)
            nxt = next(gens[i], None)
            if nxt is not None:
                heapq.heappush(heap, (nxt["step"], nxt["_key"], i, nxt))
        self._remember_windows(al, closed)
        return out

    def close(self, state: dict, reason: str = "run ended") -> list[dict]:
        """Resolve every open incident (the run ended); returns the records."""
        al = state.get("alerts")
        if not al:
            return []
        out = []
        for ikey in sorted(al["open"]):
            inc = al["open"].pop(ikey)
            if inc["announced"]:
                step = max(al.get("last_step") or 0, inc["last_step"])
                ts = al.get("last_ts") if step == al.get("last_step") else None
                out.append(self._record(state["run"], inc, "resolved", step,
                                        f"{inc['metric']} resolved: {reason} (open since step "
                                        f"{inc['first_step']})", reason=reason, ts=ts))
        for r in out:
            del r["_inc"], r["_key"]
        al["recent"].clear()
        return out

    # -- internals ----------------------------------------------------------------

    def _advance(self, run, al, ikey, cands, series, det, closed):
        """Yield one incident key's records for the batch, in step order."""
        metric = ikey.rsplit("|", 2)[0]
        base = self.policy.resolve_steps(metric, det)
        if series is None:  # a finding not tied to a series seen in this batch
            for c in cands:
                yield from self._on_finding(run, al, ikey, c, closed)
            return
        steps, ts, values, scores = series
        bad = _abnormal(det, values, scores.get(det))
        at: dict[int, list] = {}
        for c in cands:
            at.setdefault(c.step, []).append(c)
        # walk the series between findings; resolve at the first step that has been
        # normal for resolve_after steps since the last abnormal one
        lo = 0
        for s_f in [*sorted(at), None]:
            hi = len(steps) if s_f is None else int(np.searchsorted(steps, s_f, side="left"))
            inc = al["open"].get(ikey)
            if inc is not None and hi > lo and base > 0:
                yield from self._maybe_resolve(run, al, ikey, inc, steps[lo:hi], ts[lo:hi],
                                               bad[lo:hi], base)
            if s_f is None:
                break
            for c in at[s_f]:
                yield from self._on_finding(run, al, ikey, c, closed)
            lo = int(np.searchsorted(steps, s_f, side="right"))

    def _maybe_resolve(self, run, al, ikey, inc, steps, ts, bad, base):
        r = base * (2 ** min(inc["flaps"], 3))
        s = steps.astype(float)
        badstep = np.where(bad, s, -np.inf)
        last_bad = np.maximum(np.maximum.accumulate(badstep), float(inc["last_bad"]))
        ok = ~bad & (s - last_bad >= r)
        i = int(np.argmax(ok)) if ok.any() else len(s)
        if bad[:i].any():
            inc["last_bad"] = max(inc["last_bad"], int(s[:i][bad[:i]].max()))
        if i == len(s):
            return
        step = int(steps[i])
        del al["open"][ikey]
        al["recent"][ikey] = inc
        inc["resolved_at"] = step
        self._prune_recent(al, step)
        yield self._record(run, inc, "resolved", step,
                           f"{inc['metric']} resolved: normal for {r} steps since step "
                           f"{inc['last_bad']} (incident from step {inc['first_step']})",
                           reason=f"normal for {r} steps", ts=float(ts[i]), key=ikey)

    def _on_finding(self, run, al, ikey, c, closed):
        f = c.finding
        inc = al["open"].get(ikey)
        p = self.policy
        what, cause, action = describe(c, closed, al["win"])
        fields = {"kind": c.kind, "ts": c.ts, "value": c.value if isfinite(c.value)
                  else str(c.value), "severity": f.severity, "score": calibrate(f),
                  "message": f"{c.metric} {f.message}", "explanation": what, "cause": cause,
                  "action": action, "stats": {k: _sig(v) for k, v in f.stats.items()},
                  "contributors": list(f.contributors), "raw_score": _sig(float(f.score))}
        if inc is None:
            old = al["recent"].get(ikey)
            if old is not None and c.step - old["resolved_at"] <= p.cooldown:
                del al["recent"][ikey]
                inc = old
                inc.pop("resolved_at", None)
                inc["flaps"] += 1
                al["open"][ikey] = inc
                self._touch(inc, c, fields)
                yield self._record(run, inc, "updated", c.step,
                                   f"{fields['message']} (re-fired {inc['flaps']}× after "
                                   "resolving)", key=ikey)
                return
            inc = al["open"][ikey] = {
                "id": alert_id(run, c.metric, c.rank, f.detector, c.step), "metric": c.metric,
                "rank": c.rank, "detector": f.detector, "first_step": c.step, "flaps": 0,
                "count": 0, "last_emit": c.step, "announced": False, "last_bad": c.step,
                **fields}
            self._touch(inc, c, fields)
            yield self._record(run, inc, "firing", c.step, fields["message"], key=ikey)
            return
        rose = SEVERITY_RANK.get(f.severity, 0) > SEVERITY_RANK.get(inc["severity"], 0)
        self._touch(inc, c, fields)
        if rose or not inc["announced"] or c.step - inc["last_emit"] >= p.update_every:
            note = " (severity rose)" if rose else f" ({inc['count']} findings so far)"
            yield self._record(run, inc, "updated", c.step, fields["message"] + note, key=ikey)

    @staticmethod
    def _touch(inc, c, fields) -> None:
        sev = inc.get("severity", "info")
        inc.update(fields)
        if SEVERITY_RANK.get(sev, 0) > SEVERITY_RANK.get(fields["severity"], 0):
            inc["severity"] = sev  # an incident's severity never falls
        inc["count"] += 1
        inc["last_step"] = c.step
        inc["last_bad"] = max(inc["last_bad"], c.step)

    def _record(self, run, inc, state_, step, message, reason: str = "",
                ts: float | None = None, key: str = "") -> dict:
        rec = {"schema": ALERT_SCHEMA, "id": inc["id"], "state": state_, "run": run,
               "metric": inc["metric"], "rank": inc["rank"], "kind": inc["kind"],
               "detector": inc["detector"], "severity": inc["severity"], "step": step,
               "ts": inc["ts"] if ts is None else ts, "value": inc["value"], "score": inc["score"],
               "message": message, "explanation": inc["explanation"], "cause": inc["cause"],
               "action": inc["action"], "stats": dict(inc["stats"]),
               "contributors": list(inc["contributors"]), "first_step": inc["first_step"],
               "last_step": inc["last_step"]}
        rec["stats"]["findings"] = inc["count"]
        if reason:
            rec["stats"]["resolved_because"] = reason
        rec["_inc"], rec["_key"] = inc, key  # removed by _guard
        return rec

    def _guard(self, al, r: dict, out: list) -> None:
        """Storm guard and announcement bookkeeping for one record, in step order."""
        p = self.policy
        inc = r.pop("_inc")
        del r["_key"]
        if r["state"] == "resolved":
            if inc["announced"]:  # always closes what was announced
                out.append(r)
            return
        if not inc["announced"]:
            r["state"] = "firing"  # the first record anyone sees of this incident
        b = r["step"] // p.storm_steps
        if al["bucket"] != b:
            al["bucket"], al["n"] = b, 0
        must = r["state"] == "firing" and r["severity"] == "critical"
        if al["n"] >= p.storm_max and not must:
            al["held"] += 1
            return
        al["n"] += 1
        inc["announced"] = True
        inc["last_emit"] = r["step"]
        if al["held"]:
            r["stats"]["held_back"] = al["held"]
        out.append(r)

    def _prune_recent(self, al, step: int) -> None:
        rec = al["recent"]
        for k in [k for k, v in rec.items() if step - v["resolved_at"] > self.policy.cooldown]:
            del rec[k]
        while len(rec) > self.policy.recent_max:
            del rec[min(rec, key=lambda k: rec[k]["resolved_at"])]

    def _closed_windows(self, points) -> dict:
        """series key -> closed window stats (oldest first) of this batch, for context."""
        out: dict[str, list] = {}
        if self.window_label is None:
            return out
        for p in points:
            if p.measurement == "window_stats" and p.tags.get("window") == self.window_label:
                f = p.fields
                out.setdefault(f"{p.tags['metric']}|{p.tags['rank']}", []).append(
                    [f["first_step"], f["last_step"], f["count"], _sig(f["mean"]),
                     _sig(f["std"]), _sig(f["min"]), _sig(f["max"]), f["end"]])
        return out

    @staticmethod
    def _remember_windows(al, closed) -> None:
        win = al["win"]
        for key, ws in closed.items():
            win[key] = (win.get(key, []) + ws)[-2:]


def _sig(x, digits: int = 6):
    if isinstance(x, float) and isfinite(x):
        return float(f"{x:.{digits}g}")
    if isinstance(x, float):
        return str(x)
    return x
