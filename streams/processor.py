"""The pure per-run processor: events in, window stats / scores / alerts out.

Transport-free: the Faust agent and the embedded runner both call
:meth:`RunProcessor.process` with a run's state (a JSON-able dict they keep in a table
or in memory) and a batch of that run's events. Same events in, same output, however
they were batched.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from math import isfinite

import numpy as np

from telltale.config import Config, ConfigError
from telltale.detectors import Finding, Pipelines, WindowResult, WindowSpec, WindowStats
from telltale.detectors.pipelines import default_pipelines
from telltale.detectors.runrules import SeriesBatch
from telltale.records import Point, PointBlock, to_ns
from telltale.schema import Event, Rejected
from telltale.streams.lifecycle import AlertPolicy, AlertTracker

log = logging.getLogger(__name__)

STATE_VERSION = 1  # layout of a run's state; a state of another version starts cold
OWN_KEYS = ("offsets", "seen_at")  # the worker's keys in a run's state: always kept
EXTRA_TAGS = ("host", "model", "node")  # event tags copied onto points (bounded set)
SCORE_TRACE_EVERY = 10  # TELLTALE_SCORES=notable: every 10th value of a series is written
# notable run-rule step scores (0..1, calibrated on their reference): past its 99th percentile,
# the warning level of the univariate scikit-learn detectors (detectors/ml.py)
NOTABLE_RULE_SCORE = 0.99


@dataclass(slots=True)
class Candidate:
    """A detector finding placed in its run: the input of the alert stage."""

    metric: str
    rank: str
    kind: str
    step: int
    ts: float
    value: float
    finding: Finding
    seq: int = 0  # the event's place in its run's stream (order within a step)


@dataclass
class Output:
    points: list[Point] = field(default_factory=list)
    alerts: list[dict] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)  # for the dead-letter topic
    blocks: list[PointBlock] = field(default_factory=list)  # raw values, scores: columns

    def extend(self, other: Output) -> None:
        self.points.extend(other.points)
        self.alerts.extend(other.alerts)
        self.rejected.extend(other.rejected)
        self.blocks.extend(other.blocks)

    def all_points(self) -> list[Point]:
        """Every point, the blocks' rows as Point objects too."""
        return self.points + [p for b in self.blocks for p in b.points()]


def _policy(path: str | None) -> AlertPolicy:
    """The alert policy in ``path`` (TELLTALE_ALERT_POLICY), else the defaults."""
    if not path:
        return AlertPolicy()
    try:
        return AlertPolicy.from_file(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"alert policy file {path} (TELLTALE_ALERT_POLICY): {exc}; fix the "
                          "file or unset TELLTALE_ALERT_POLICY for the defaults") from None


class RunProcessor:
    """Window statistics and detectors for every (metric, rank) series of a run."""

    def __init__(self, config: Config | None = None, pipelines: Pipelines | None = None):
        config = config or Config()
        try:
            self.windows = [WindowStats(WindowSpec.parse(w)) for w in config.windows]
        except ValueError as exc:
            raise ConfigError(f"TELLTALE_WINDOWS (--windows): {exc}") from None
        if pipelines is None:
            pipelines = (Pipelines.from_file(config.pipelines_file)
                         if config.pipelines_file else default_pipelines())
        self.pipelines = pipelines
        self.rules = pipelines.run_rules()
        self.max_series = config.max_series_per_run
        self.scores = config.scores  # which scores become points: all | notable | none
        policy = _policy(config.alert_policy_file)
        step_windows = [ws.spec.label for ws in self.windows
                        if ws.spec.by == "step" and ws.spec.tumbling]
        self.alerts = AlertTracker(policy, step_windows[0] if step_windows else None,
                                   pipelines)
        # what a state's parts are keyed by: window labels, detector and rule names
        spec = [[ws.spec.label for ws in self.windows], pipelines.rule_specs,
                pipelines.run_rule_specs]
        self.layout = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()
                                   ).hexdigest()[:12]
        self._adopt_logged: set[str] = set()

    def new_state(self, run: str) -> dict:
        return {"v": STATE_VERSION, "layout": self.layout, "run": run, "series": {},
                "events": 0, "ended": False}

    def adopt(self, state: dict) -> None:
        """Fit a stored state to this configuration, in place (a worker restarted with
        other windows or pipelines, or a state from another version): the windows,
        detectors and run rules still configured keep their state, new ones start cold,
        the others are dropped and logged. A state of another version starts cold."""
        if state.get("layout") == self.layout:
            return
        run = state.get("run", "?")
        if state.get("v") != STATE_VERSION:
            own = {k: state[k] for k in OWN_KEYS if k in state}
            old_v = state.get("v")
            state.clear()
            state.update(self.new_state(run), **own)
            self._log_adopted(f"state version {old_v!r}, this worker reads {STATE_VERSION}: "
                              "the run starts cold", run)
            return
        labels = [ws.spec.label for ws in self.windows]
        dropped: dict[str, set] = {"windows": set(), "detectors": set(), "run rules": set()}
        added: dict[str, set] = {"windows": set(), "detectors": set(), "run rules": set()}
        for key, ser in state["series"].items():
            w = ser["w"]
            for label in [x for x in w if x not in labels]:
                del w[label]
                dropped["windows"].add(label)
            for ws in self.windows:
                if ws.spec.label not in w:
                    w[ws.spec.label] = ws.new_state()
                    added["windows"].add(ws.spec.label)
            d = ser["d"]
            dets = self.pipelines.for_metric(key.rsplit("|", 1)[0])
            names = {det.name for det in dets}
            for name in [x for x in d if x not in names]:
                del d[name]
                dropped["detectors"].add(name)
            for det in dets:
                if det.name not in d:
                    d[det.name] = det.new_state()
                    added["detectors"].add(det.name)
        rules = {r.name for r in self.rules}
        rstate = state.get("rules", {})
        for name in [x for x in rstate if x not in rules]:
            del rstate[name]
            dropped["run rules"].add(name)
        state["layout"] = self.layout
        what = "; ".join(f"{verb} {k} {sorted(v)}" for verb, parts in
                         (("dropped", dropped), ("started cold", added))
                         for k, v in parts.items() if v)
        if what:
            self._log_adopted(f"state from another configuration (TELLTALE_WINDOWS or "
                              f"the pipelines changed): {what}; the rest is kept", run)

    def _log_adopted(self, msg: str, run: str) -> None:
        """Once per kind of change (not once per run), at warning level."""
        if msg not in self._adopt_logged and len(self._adopt_logged) < 100:
            self._adopt_logged.add(msg)
            log.warning("run %r (and others like it): %s", run, msg)

    def process(self, state: dict, events: list[Event]) -> Output:
        """Process one run's events in order; mutates ``state``."""
        if state.get("layout") != self.layout:
            self.adopt(state)
        out = Output()
        chunk: list[Event] = []
        for ev in events:
            if ev.kind == "end":
                out.extend(self._process_chunk(state, chunk))
                chunk = []
                out.extend(self.end(state))
            else:
                chunk.append(ev)
        out.extend(self._process_chunk(state, chunk))
        return out

    def end(self, state: dict, reason: str = "run ended") -> Output:
        """The run is over: :meth:`flush` it and mark its state ended."""
        out = self.flush(state, reason)
        state["ended"] = True
        return out

    def flush(self, state: dict, reason: str = "run ended") -> Output:
        """Close every open window and resolve every open alert of the run (run ended,
        or end of an offline file)."""
        if state.get("layout") != self.layout:
            self.adopt(state)
        out = Output()
        for key, ser in state["series"].items():
            for ws in self.windows:
                wst = ser["w"].get(ws.spec.label)
                if wst is not None:
                    out.points.extend(self._window_points(state["run"], key, ser,
                                                          ws.flush(wst)))
        self._add_alerts(self.alerts.close(state, reason), out)
        return out

    # -- internals ---------------------------------------------------------------

    def _process_chunk(self, state: dict, events: list[Event]) -> Output:
        out = Output()
        if not events:
            return out
        run = state["run"]
        base = state["events"]  # the run's events before this chunk: global stream positions
        state["events"] += len(events)
        state["ended"] = False
        # (metric, rank) -> (steps, ts, values, kind, seqs, series key, host)
        groups: dict[tuple, tuple[list, list, list, str, list, str, str]] = {}
        pts = out.points
        # raw values as columns, one block per (kind, rank, tags, metric names); an event
        # with a non-finite value is a Point of its own that counts them
        mblocks: dict[tuple, PointBlock] = {}
        for seq, ev in enumerate(events):
            rank, step, ts, metrics = ev.rank, ev.step, ev.ts, ev.metrics
            extra: tuple[tuple[str, str], ...] = ()
            if ev.tags:
                extra = tuple((t, ev.tags[t]) for t in EXTRA_TAGS if t in ev.tags)
            bad = 0
            for name, v in metrics.items():
                if not isfinite(v):
                    bad += 1
                g = groups.get((name, rank))
                if g is None:
                    host = str(ev.tags.get("host", "")) if ev.tags else ""
                    g = groups[(name, rank)] = ([], [], [], ev.kind, [], f"{name}|{rank}", host)
                g[0].append(step)
                g[1].append(ts)
                g[2].append(v)
                g[4].append(seq)
            if bad:
                fields: dict[str, float | int | str] = {
                    k: v for k, v in metrics.items() if isfinite(v)}
                fields["step"] = step
                fields["nonfinite"] = bad
                pts.append(Point("metrics", {"run": run, "kind": ev.kind, "rank": rank,
                                             **dict(extra)}, fields, to_ns(ts)))
                continue
            bk = (ev.kind, rank, extra, *metrics)
            b = mblocks.get(bk)
            if b is None:
                b = mblocks[bk] = PointBlock(
                    "metrics", {"run": run, "kind": ev.kind, "rank": rank, **dict(extra)},
                    list(metrics), [], [], [])
            # rows for now: transposed below
            b.columns.append(metrics.values())  # type: ignore[arg-type]
            b.steps.append(step)
            b.times_ns.append(to_ns(ts))
        for b in mblocks.values():
            b.columns = [list(c) for c in zip(*b.columns, strict=True)]
            out.blocks.append(b)
        candidates: list[Candidate] = []
        batch: dict[str, SeriesBatch] = {}
        seen: dict[str, tuple] = {}  # series key -> (steps, ts, values, scores) of the batch
        refused = []
        for steps, times, vals, kind, seqs, key, host in groups.values():
            ser = state["series"].get(key)
            if ser is None:
                if len(state["series"]) >= self.max_series:  # bounded state per run
                    refused.append((key, len(steps)))
                    continue
                ser = state["series"][key] = self._new_series(key, kind)
            metric, rank = key.rsplit("|", 1)
            sb = batch[key] = SeriesBatch(metric, rank, ser["kind"],
                                          np.asarray(steps, dtype=np.int64),
                                          np.asarray(times, dtype=float),
                                          np.asarray(vals, dtype=float),
                                          np.asarray(seqs, dtype=np.int64), host)
            scores = self._update_series(run, key, ser, sb, out, candidates)
            seen[key] = (sb.steps, sb.ts, sb.values, scores, sb.seq + base)
        rstate = state.setdefault("rules", {})
        rule_scores: list[tuple] = []
        for rule in self.rules:
            for rf in rule.update(rstate.setdefault(rule.name, rule.new_state()), batch,
                                  rule_scores):
                kind = state["series"][f"{rf.metric}|{rf.rank}"]["kind"]
                # a rule decides once the step's last value it needed is in: that event
                seq = next((i for i in range(len(events) - 1, -1, -1)
                            if events[i].step == rf.step), len(events) - 1)
                candidates.append(Candidate(rf.metric, rf.rank, kind, rf.step, rf.ts, rf.value,
                                            rf.finding, seq))
        if rule_scores and self.scores == "notable":
            rule_scores = self._notable_rule_rows(state, rule_scores)
        if rule_scores and self.scores != "none":
            self._rule_score_points(run, rule_scores, out)
        if refused:
            state["refused_values"] = state.get("refused_values", 0) + sum(n for _, n in refused)
            out.rejected.append(Rejected(
                f"run {run!r} has {self.max_series} series (metric × rank), the most one run "
                f"may have (TELLTALE_MAX_SERIES_PER_RUN); {sum(n for _, n in refused)} values "
                f"of {len(refused)} new series were not processed",
                {"run": run, "series": [k for k, _ in refused[:50]]}))
        for c in candidates:
            c.seq += base
        candidates = self._group_nonfinite(state, candidates)
        self._emit_alerts(state, candidates, out, seen)
        return out

    @staticmethod
    def _group_nonfinite(state: dict, candidates: list[Candidate],
                         quiet_steps: int = 1000) -> list[Candidate]:
        """Once a run has gone non-finite, later non-finite findings on its other metrics are
        the same incident: keep the first, fold the rest into it."""
        nf = state.get("nonfinite")
        kept = [c for c in candidates if c.finding.detector != "nonfinite"]
        for c in sorted((c for c in candidates if c.finding.detector == "nonfinite"),
                        key=lambda c: (c.step, c.seq)):  # stream order within a step
            if nf is not None and c.step - nf["last"] <= quiet_steps:
                nf["last"] = max(nf["last"], c.step)
                if c.metric not in nf["metrics"] and len(nf["metrics"]) < 64:
                    nf["metrics"].append(c.metric)
                continue
            nf = state["nonfinite"] = {"first": c.step, "last": c.step, "metrics": [c.metric]}
            kept.append(c)
        return kept

    def _new_series(self, key: str, kind: str) -> dict:
        metric = key.rsplit("|", 1)[0]
        return {"kind": kind,
                "w": {ws.spec.label: ws.new_state() for ws in self.windows},
                "d": {d.name: d.new_state() for d in self.pipelines.for_metric(metric)}}

    def _update_series(self, run, key, ser, sb: SeriesBatch, out: Output,
                       candidates: list[Candidate]) -> dict[str, np.ndarray]:
        metric, rank = key.rsplit("|", 1)
        steps, ts, vals = sb.steps, sb.ts, sb.values
        for ws in self.windows:
            closed = ws.update(ser["w"][ws.spec.label], steps, ts, vals)
            out.points.extend(self._window_points(run, key, ser, closed))
        scores: dict[str, np.ndarray] = {}
        dets = self.pipelines.for_metric(metric)
        found = len(candidates)
        for det in dets:
            sc, findings = det.update(ser["d"][det.name], steps, vals)
            scores[det.name] = sc
            for f in findings:
                i = f.index
                candidates.append(Candidate(metric, rank, ser["kind"], int(steps[i]),
                                            float(ts[i]), float(vals[i]), f,
                                            int(sb.seq[i])))
        if scores and self.scores != "none":
            rows = None
            if self.scores == "notable":
                rows = self._notable(ser, dets, vals, scores,
                                     [c.finding.index for c in candidates[found:]])
            self._score_points(run, metric, rank, ser["kind"], steps, ts, scores, out, rows)
        return scores

    @staticmethod
    def _notable(ser: dict, dets, vals: np.ndarray, scores: dict, found: list[int]
                 ) -> np.ndarray:
        """TELLTALE_SCORES=notable: the values whose scores are written: where a detector
        finds the series abnormal (its warning level: ``abnormal()``) or has a finding, and
        every SCORE_TRACE_EVERY-th value of the series (a trace; counted in its state, so
        the same values however the events were batched)."""
        n0 = ser.get("scored", 0)
        ser["scored"] = n0 + len(vals)
        rows = np.arange(n0, n0 + len(vals)) % SCORE_TRACE_EVERY == 0
        for det in dets:
            rows |= det.abnormal(vals, scores[det.name])
        rows[found] = True
        return rows

    def _emit_alerts(self, state: dict, candidates: list[Candidate], out: Output,
                     seen: dict | None = None) -> None:
        """The alert stage: the batch's findings go through the lifecycle (streams/lifecycle.py:
        firing/updated/resolved, dedup, cooldown, storm guard); ``seen`` holds the series
        that got values in the batch, so open incidents can resolve."""
        self._add_alerts(self.alerts.process(state, candidates, seen or {}, out.points), out)

    @staticmethod
    def _add_alerts(records: list[dict], out: Output) -> None:
        for a in records:
            out.alerts.append(a)
            out.points.append(Point(
                "alerts",
                {"run": a["run"], "metric": a["metric"], "rank": a["rank"],
                 "detector": a["detector"], "severity": a["severity"], "state": a["state"]},
                {"id": a["id"], "step": a["step"], "score": float(a["score"]),
                 "message": a["message"], "explanation": a["explanation"],
                 "cause": a["cause"], "action": a["action"], "first_step": a["first_step"],
                 "last_step": a["last_step"], "contributors": json.dumps(a["contributors"]),
                 "resolved_because": a["stats"].get("resolved_because", "")},
                to_ns(a["ts"])))

    @staticmethod
    def _notable_rule_rows(state: dict, rows: list[tuple]) -> list[tuple]:
        """TELLTALE_SCORES=notable for run rules' step scores: the steps where a rule scores
        at or past NOTABLE_RULE_SCORE, and every SCORE_TRACE_EVERY-th step of each
        (series, rank), counted in the run's state; a kept step keeps every rule's score."""
        at: dict[tuple, dict[int, bool]] = {}  # (series, rank) -> {step: notable}
        for series, rank, step, _ts, _name, score in rows:
            d = at.setdefault((series, rank), {})
            d[step] = d.get(step, False) or score >= NOTABLE_RULE_SCORE
        counts = state.setdefault("scored_rules", {})
        keep: set[tuple] = set()
        for (series, rank), d in at.items():
            ck = f"{series}|{rank}"
            n = counts.get(ck, 0)
            counts[ck] = n + len(d)
            keep.update((series, rank, st) for i, st in enumerate(sorted(d))
                        if d[st] or (n + i) % SCORE_TRACE_EVERY == 0)
        return [r for r in rows if r[:3] in keep]

    @staticmethod
    def _score_points(run, metric, rank, kind, steps, ts, scores, out: Output,
                      rows: np.ndarray | None = None) -> None:
        """A block of the series' scores, a row per value (``rows``: only those) that has
        a finite score."""
        names = list(scores)
        mat = np.vstack([scores[n] for n in names])
        keep = np.isfinite(mat).any(axis=0)
        if rows is not None:
            keep &= rows
        if not keep.all():
            if not keep.any():
                return
            mat, steps, ts = mat[:, keep], steps[keep], ts[keep]
        out.blocks.append(PointBlock(
            "scores", {"run": run, "metric": metric, "rank": rank, "kind": kind}, names,
            mat.tolist(), steps.tolist(), np.rint(ts * 1e9).astype(np.int64).tolist()))

    @staticmethod
    def _rule_score_points(run, rows: list[tuple], out: Output) -> None:
        """Run rules' step scores (multivariate KNN / One-Class SVM) as score blocks, one per
        (series, rank): a column per rule."""
        by: dict[tuple, dict] = {}
        for series, rank, step, ts, name, score in rows:
            by.setdefault((series, rank), {}).setdefault((step, ts), {})[name] = score
        for (series, rank), at in by.items():
            names = sorted({n for d in at.values() for n in d})
            keys = sorted(at)
            out.blocks.append(PointBlock(
                "scores", {"run": run, "metric": series, "rank": rank, "kind": "train"}, names,
                [[at[k].get(n, float("nan")) for k in keys] for n in names],
                [k[0] for k in keys], [to_ns(k[1]) for k in keys]))

    @staticmethod
    def _window_points(run, key, ser, closed: list[WindowResult]) -> list[Point]:
        metric, rank = key.rsplit("|", 1)
        pts = []
        for w in closed:
            if w.spec.startswith("time"):
                time_ns = to_ns(w.start)
            else:  # hopping windows that begin with the same event (at a run's start,
                # after a gap in steps) get distinct times, in the order of their starts:
                # 1 ns earlier per hop from their start to that event
                time_ns = to_ns(w.first_ts) - int((w.first_step - w.start) // w.hop)
            pts.append(Point(
                "window_stats",
                {"run": run, "metric": metric, "rank": rank, "kind": ser["kind"],
                 "window": w.spec},
                {"count": w.count, "mean": w.mean, "std": w.std, "min": w.min, "max": w.max,
                 "first_step": w.first_step, "last_step": w.last_step,
                 "start": w.start, "end": w.end},
                time_ns))
        return pts
