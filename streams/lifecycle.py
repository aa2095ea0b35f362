"""Alert lifecycle: detector findings become incidents that fire, update and resolve.

Pure and transport-free, like the processor. An :class:`AlertTracker` keeps its state in
the run's state dict (``state["alerts"]``, JSON-able, bounded by the number of series ×
detectors) and turns each batch's candidates into alert records:

- one incident per problem: findings of one (metric, rank, detector) are one member
  incident, and members whose metrics belong to one *family* (pipelines.py: a loss and its
  accuracy, step time and samples/s) join the run's open incident of that family as
  ``updated`` records with their metric added to ``contributors``; a run gone non-finite
  takes every later finding into that incident; the incident resolves when its last
  member does;
- ``firing`` when it opens, ``updated`` when its severity rises, at most every
  ``update_every`` steps while findings continue, or when it re-fires within ``cooldown``
  steps of resolving (same id: a flapping series reopens its incident instead of paging);
- ``resolved`` once the series has been normal for ``resolve_after`` steps (the detector's
  own, or the policy's; doubled for each reopen, up to 8×; 0 = not before the run ends)
  or when the run ends; "normal" is the detector's own ``abnormal`` (detectors/base.py);
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

from telltale.detectors.pipelines import NONFINITE_FAMILY, Pipelines, default_pipelines
from telltale.records import ALERT_SCHEMA, alert_id
from telltale.streams.explain import describe

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass
class AlertPolicy:
    """Lifecycle settings; ``resolve_after`` maps ``detector`` or ``metric-glob:detector``."""

    resolve_after: dict = field(default_factory=dict)  # overrides the detectors' own
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

    def resolve_steps(self, metric: str, detector: str, default: int = 50) -> int:
        """Normal steps that resolve an incident: this policy's, else ``default`` (the
        detector's own ``resolve_after``)."""
        for pat, n in self.resolve_after.items():
            if ":" in pat:
                mpat, det = pat.rsplit(":", 1)
                if det == detector and fnmatch.fnmatchcase(metric.lower(), mpat.lower()):
                    return int(n)
        return int(self.resolve_after.get(detector, default))


class AlertTracker:
    """firing → updated → resolved over one run's candidates (see the module docstring)."""

    def __init__(self, policy: AlertPolicy | None = None, window_label: str | None = None,
                 pipelines: Pipelines | None = None):
        self.policy = policy or AlertPolicy()
        self.window_label = window_label  # tumbling step window used for context
        self.pipelines = pipelines or default_pipelines()  # detectors own alert semantics

    @staticmethod
    def new_state() -> dict:
        return {"open": {}, "recent": {}, "win": {}, "bucket": None, "n": 0, "held": 0,
                "last_step": None, "last_ts": None, "problems": {}}

    # -- entry points -----------------------------------------------------------

    def process(self, state: dict, candidates: list, seen: dict, window_points=()) -> list[dict]:
        """Records for one batch. ``seen``: series key -> (steps, ts, values, {detector: scores}
        [, stream positions]) for every series that got values in the batch; candidates carry
        their event's stream position (``seq``). Records are taken in stream order, so a step
        split across batches gives the same records as one batch."""
        al = state.setdefault("alerts", self.new_state())
        run = state["run"]
        closed = self._closed_windows(window_points)
        for steps, ts, *_ in seen.values():
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
        # stream order (step, then the event), and within one event the most severe, then
        # highest-scoring record first: it leads the incident the others of its family join
        def order(r):
            return (r["step"], r["_seq"], -SEVERITY_RANK.get(r["severity"], 0), -r["score"],
                    r["_key"])

        heap = []
        for i, g in enumerate(gens):
            r = next(g, None)
            if r is not None:
                heap.append((order(r), i, r))
        heapq.heapify(heap)
        out: list[dict] = []
        while heap:
            _, i, r = heapq.heappop(heap)
            self._guard(al, r, out)
            nxt = next(gens[i], None)
            if nxt is not None:
                heapq.heappush(heap, (order(nxt), i, nxt))
        self._remember_windows(al, closed)
        return out

    def close(self, state: dict, reason: str = "run ended") -> list[dict]:
        """Resolve every open incident (the run ended); returns the records."""
        al = state.get("alerts")
        if not al:
            return []
        out, done = [], set()
        probs = al.setdefault("problems", {})
        for ikey in sorted(al["open"]):
            inc = al["open"].pop(ikey)
            if not inc["announced"] or inc["id"] in done:
                continue  # never announced, or its incident's record is already out
            done.add(inc["id"])
            step = max(al.get("last_step") or 0, inc["last_step"])
            ts = al.get("last_ts") if step == al.get("last_step") else None
            p = self._problem(al, inc)
            lead = p["metric"] if p else inc["metric"]
            first = p["first_step"] if p else inc["first_step"]
            r = self._record(state["run"], inc, "resolved", step,
                             f"{lead} resolved: {reason} (open since step {first})",
                             reason=reason, ts=ts)
            if p is not None:
                self._as_lead(r, p)
                p.update(open=False, members=[], resolved_at=step)
            out.append(r)
        for r in out:
            del r["_inc"], r["_key"], r["_seq"]
        al["recent"].clear()
        probs.clear()
        return out

    # -- internals ----------------------------------------------------------------

    def _advance(self, run, al, ikey, cands, series, det, closed):
        """Yield one incident key's records for the batch, in step order."""
        metric = ikey.rsplit("|", 2)[0]
        sem = self.pipelines.semantics(metric, det)
        base = self.policy.resolve_steps(metric, det, sem.resolve_after)
        if series is None:  # a finding not tied to a series seen in this batch
            for c in cands:
                yield from self._on_finding(run, al, ikey, c, closed)
            return
        steps, ts, values, scores = series[:4]
        seqs = series[4] if len(series) > 4 else np.zeros(len(steps), dtype=np.int64)
        score = scores.get(det)
        bad = np.asarray(sem.abnormal(values, np.full(len(values), np.nan) if score is None
                                      else score), dtype=bool)
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
                                               bad[lo:hi], base, seqs[lo:hi])
            if s_f is None:
                break
            for c in at[s_f]:
                yield from self._on_finding(run, al, ikey, c, closed)
            lo = int(np.searchsorted(steps, s_f, side="right"))

    def _maybe_resolve(self, run, al, ikey, inc, steps, ts, bad, base, seqs):
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
                           reason=f"normal for {r} steps", ts=float(ts[i]), key=ikey,
                           seq=int(seqs[i]))

    def _on_finding(self, run, al, ikey, c, closed):
        f = c.finding
        inc = al["open"].get(ikey)
        p = self.policy
        what, cause, action = describe(c, closed, al["win"])
        sem = self.pipelines.semantics(c.metric, f.detector)
        fields = {"kind": c.kind, "ts": c.ts, "value": c.value if isfinite(c.value)
                  else str(c.value), "severity": f.severity,
                  "score": sem.unit_score(float(f.score)),
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
                                   "resolving)", key=ikey, seq=c.seq)
                return
            inc = al["open"][ikey] = {
                "id": alert_id(run, c.metric, c.rank, f.detector, c.step), "metric": c.metric,
                "rank": c.rank, "detector": f.detector, "first_step": c.step, "flaps": 0,
                "count": 0, "last_emit": c.step, "announced": False, "last_bad": c.step,
                "family": self.pipelines.family(c.metric, f.detector), "problem": None,
                **fields}
            self._touch(inc, c, fields)
            yield self._record(run, inc, "firing", c.step, fields["message"], key=ikey,
                               seq=c.seq)
            return
        rose = SEVERITY_RANK.get(f.severity, 0) > SEVERITY_RANK.get(inc["severity"], 0)
        self._touch(inc, c, fields)
        if rose or not inc["announced"] or c.step - inc["last_emit"] >= p.update_every:
            note = " (severity rose)" if rose else f" ({inc['count']} findings so far)"
            yield self._record(run, inc, "updated", c.step, fields["message"] + note, key=ikey,
                               seq=c.seq)

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
                ts: float | None = None, key: str = "", seq: int = 0) -> dict:
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
        rec["_inc"], rec["_key"], rec["_seq"] = inc, key, seq  # removed by _guard
        return rec

    @staticmethod
    def _problem(al, inc) -> dict | None:
        """The incident (problem) a member belongs to, if it still is that member's."""
        p = al.setdefault("problems", {}).get(inc.get("problem") or "")
        return p if p is not None and p["id"] == inc["id"] else None

    def _joinable(self, al, inc, step: int) -> dict | None:
        """The run's incident a new member joins: the open non-finite one (a broken run),
        else the open (or just resolved, within ``cooldown``) one of its family."""
        probs = al.setdefault("problems", {})
        if inc["family"] != NONFINITE_FAMILY:
            nf = probs.get(NONFINITE_FAMILY)
            if nf is not None and nf["open"]:
                return nf
        p = probs.get(inc["family"])
        if p is not None and (p["open"] or step - p["resolved_at"] <= self.policy.cooldown):
            return p
        return None

    def _group(self, al, r: dict, inc: dict, ikey: str) -> bool:
        """Give a member's record its incident (problem); False when it says nothing new
        (a member resolved while others of its incident are still open)."""
        probs = al.setdefault("problems", {})
        p = self._problem(al, inc)
        if r["state"] == "resolved":
            if p is None:
                return True
            if ikey in p["members"]:
                p["members"].remove(ikey)
            if p["members"]:
                return False
            p.update(open=False, resolved_at=r["step"])
            r["message"] = r["message"].replace(inc["metric"], p["metric"], 1)
            self._as_lead(r, p)
            return True
        if p is None:
            inc["problem"] = None
            p = self._joinable(al, inc, r["step"])
            if p is None:  # opens its own incident
                probs[inc["family"]] = {
                    "id": inc["id"], "metric": inc["metric"], "rank": inc["rank"],
                    "detector": inc["detector"], "first_step": r["step"],
                    "members": [ikey], "contributors": [inc["metric"]], "open": True,
                    "resolved_at": None}
                inc["problem"] = inc["family"]
                r["contributors"] = list(dict.fromkeys([inc["metric"], *r["contributors"]]))
                return True
            inc["id"] = r["id"] = p["id"]
            inc["problem"] = next(k for k, v in probs.items() if v is p)
            r["state"] = "updated"
            r["message"] += (f" (joins the incident of {p['metric']} from step "
                             f"{p['first_step']})")
        if not p["open"]:
            r["message"] += " (incident re-opened)"
        p["open"] = True
        if ikey not in p["members"]:
            p["members"].append(ikey)
        if inc["metric"] not in p["contributors"] and len(p["contributors"]) < 32:
            p["contributors"].append(inc["metric"])
        r["contributors"] = list(dict.fromkeys(p["contributors"] + r["contributors"]))
        return True

    @staticmethod
    def _as_lead(r: dict, p: dict) -> None:
        """A record that speaks for the whole incident names its lead finding."""
        r.update(metric=p["metric"], rank=p.get("rank", r["rank"]),
                 detector=p.get("detector", r["detector"]), contributors=list(p["contributors"]))

    def _guard(self, al, r: dict, out: list) -> None:
        """Incident grouping, storm guard and announcement bookkeeping for one record, in
        step order."""
        p = self.policy
        inc = r.pop("_inc")
        ikey = r.pop("_key")
        del r["_seq"]
        if r["state"] == "resolved":
            if inc["announced"] and self._group(al, r, inc, ikey):
                out.append(r)  # always closes what was announced
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
        self._group(al, r, inc, ikey)
        prob = self._problem(al, inc)
        if prob is not None:
            # one record per incident, state and step (the consumers' idempotency key):
            # more members joining at one step show in the incident's next record
            if prob.get("last") == [r["state"], r["step"]]:
                inc["announced"] = True
                return
            prob["last"] = [r["state"], r["step"]]
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
