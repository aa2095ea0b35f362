"""The dashboard's view model: :func:`build_view` turns a run's points per measurement
(``{"measurement", "tags", "fields", "time"}`` dicts, as the local store writes them) and
its alert records into the JSON document the page draws; incidents, health and the run
list's order are decided here too. The sources that read them are in
``telltale/ui/sources.py``.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict

import numpy as np

INTERNAL_FAMILIES = ("grad_norm", "param_norm", "update_ratio", "act_mean", "act_std",
                     "act_zero_frac", "attn_entropy")
RESOURCE_TRAIN_METRICS = ("step_time_s", "sync_wait_s", "samples_per_s")
INFER_BUCKET = 20  # requests per latency-percentile bucket
MAX_POINTS = 2000  # per series sent to the page
DRIFT_METRICS = ("latency_ms", "ttft_ms", "tokens_per_s")  # their scores = the drift panel


K_MAX = 20.0  # widest band: mean ± K_MAX·std


class DataError(RuntimeError):
    """The data source cannot be read; the message says what to do."""


def parse_k(k) -> float:
    """The band width ``k`` of mean ± k·std, or ValueError with the one message that the
    page, the API and ``telltale report`` all give."""
    if k is None or k == "":
        return 3.0
    try:
        v = float(k)
    except (TypeError, ValueError):
        v = math.nan
    if not 0 < v <= K_MAX:  # also refuses NaN
        raise ValueError(f"k must be a number in (0, {K_MAX:g}] (the band is mean ± k·std), "
                         f"got {k!r}")
    return v


# -- the view ---------------------------------------------------------------------------


HEALTH = ("critical", "warning", "recovered", "ok")  # worst first: the run list's order
_SEV = {"critical": 0, "warning": 1, "info": 2}


def _ended_unrecovered(rec: dict) -> bool:
    """Closed only because the run or its input ended: it never went back to normal."""
    return str((rec.get("stats") or {}).get("resolved_because", "")).endswith(" ended")


def incidents(alerts: list[dict]) -> list[dict]:
    """One record per incident (alert id), placed at its first step: what happened comes
    from its firing record, or from the first record that raised its severity (related
    findings join an incident as updates; its contributors list them), its state from its
    latest record.

    ``status`` is the one open/resolved answer used by the list, the run and the API:
    "open" unless the incident went back to normal ("resolved"); an incident closed only
    because its run ended is open (``ended``: the run ended before it recovered).
    With the alert lifecycle an incident is several records (firing, updated, resolved);
    without it every record is its own open incident.
    """
    first: dict = {}
    last: dict = {}
    active: dict = {}
    rank = {"info": 0, "warning": 1, "critical": 2}
    for a in alerts:
        key = a.get("id") or id(a)
        first.setdefault(key, a)
        last[key] = a
        if a.get("state") != "resolved":
            head = active.get(key)
            if head is None or rank.get(a.get("severity"), 0) > rank.get(head.get("severity"), 0):
                active[key] = a
    out = []
    for key, a in last.items():
        f = first[key]
        base = active.get(key, a)
        rec = {**base, "state": a.get("state", base.get("state")),
               "step": a.get("first_step", f.get("step")),
               "last_step": a.get("last_step", a.get("step")),
               "message": base.get("message", ""), "records": 0,
               "contributors": a.get("contributors") or base.get("contributors") or []}
        rec["ended"] = a.get("state") == "resolved" and _ended_unrecovered(a)
        rec["status"] = "resolved" if a.get("state") == "resolved" and not rec["ended"] \
            else "open"
        if a is not base:
            rec["resolution"] = a.get("message", "")
        out.append(rec)
    counts: dict = defaultdict(int)
    for a in alerts:
        counts[a.get("id") or id(a)] += 1
    for key, rec in zip(last, out, strict=True):
        rec["records"] = counts[key]
    return out


def open_alerts(alerts: list[dict]) -> list[dict]:
    """The open incidents (see :func:`incidents`)."""
    return [i for i in incidents(alerts) if i["status"] == "open"]


def worst_first(incs: list[dict]) -> list[dict]:
    """Open incidents before resolved ones; then critical first; then the earliest (what
    went wrong first is usually the cause of what followed), the higher score on a tie."""
    return sorted(incs, key=lambda a: (a.get("status") != "open", _SEV.get(a.get("severity"), 3),
                                       a.get("step") or 0, -float(a.get("score") or 0)))


def run_health(incs: list[dict]) -> str:
    """critical / warning: an open incident of that severity; recovered: incidents, all
    resolved; ok: none."""
    opened = [a for a in incs if a["status"] == "open"]
    if any(a.get("severity") == "critical" for a in opened):
        return "critical"
    if opened:
        return "warning"
    return "recovered" if incs else "ok"


def sort_runs(rows: list[dict]) -> list[dict]:
    """Worst health first, then the most open incidents, then live before idle, by name."""
    return sorted(rows, key=lambda r: (HEALTH.index(r["health"]), -r["open_alerts"],
                                       r["status"] != "live", r["run"]))


def run_summary(run, step, events, t0, t1, alerts, status) -> dict:
    """One row of the run list: health, counts and the worst incident of a run."""
    incs = incidents(alerts)
    opened = [a for a in incs if a["status"] == "open"]
    worst = worst_first(incs)
    top = worst[0] if worst else None
    return {"run": run, "status": status, "health": run_health(incs),
            "last_step": step, "events": events, "first_ts": t0, "last_ts": t1,
            "open_alerts": len(opened), "alerts": len(incs),
            "by_severity": {s: sum(1 for a in incs if a.get("severity") == s)
                            for s in ("critical", "warning", "info")
                            if any(a.get("severity") == s for a in incs)},
            "alert_records": len(alerts),
            "last_alert_ts": max((a.get("ts") or 0 for a in alerts), default=None),
            "worst": None if top is None else {
                k: top.get(k) for k in ("id", "metric", "rank", "step", "severity", "status",
                                        "message")}}


def explain(a: dict) -> str:
    """The alert's explanation, or one made from its message and window stats."""
    if a.get("explanation"):
        return a["explanation"]
    st = a.get("stats") or {}
    parts = [a.get("message", "")]
    if "mean" in st and "std" in st and "mean" not in parts[0]:
        n = f" over {st['n']} values" if "n" in st else ""
        parts.append(f"normal: mean {st['mean']:.4g} ± {st['std']:.4g}{n}")
    rank = f" rank {a['rank']}" if str(a.get("rank", "0")) != "0" else ""
    parts.append(f"{a.get('detector')} detector, {a.get('severity')}, step {a.get('step')}"
                 f"{rank}")
    return "; ".join(p for p in parts if p)


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _decimate(n: int, keep: set[int] | None = None) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    idx = set(np.linspace(0, n - 1, MAX_POINTS).astype(int).tolist())
    return np.asarray(sorted(idx | (keep or set())))


def _family(metric: str) -> tuple[str, str] | None:
    fam, sep, layer = metric.partition("/")
    return (fam, layer) if sep and fam in INTERNAL_FAMILIES and layer else None


def build_view(run: str, pts: dict[str, list[dict]], alerts: list[dict], k: float = 3.0,
               status: str = "idle") -> dict:
    """The page's document for one run: summary, panels, alerts (all JSON-able)."""
    metrics = sorted(pts.get("metrics", []), key=lambda p: p["time"])
    # series[(metric, rank)] = (kind, host, steps, values)
    series: dict[tuple[str, str], dict] = {}
    for p in metrics:
        t, f = p["tags"], p["fields"]
        kind, rank = t.get("kind", "train"), str(t.get("rank", "0"))
        for name, v in f.items():
            if name in ("step", "nonfinite") or isinstance(v, str):
                continue
            s = series.get((name, rank))
            if s is None:
                s = series[(name, rank)] = {"kind": kind, "host": t.get("host") or t.get("node"),
                                            "steps": [], "values": [], "ts": []}
            s["steps"].append(f.get("step"))
            s["values"].append(v)
            s["ts"].append(p["time"] / 1e9)
    records = alerts
    alerts = sorted(incidents(alerts), key=lambda a: (a.get("step") or 0, a.get("metric") or ""))
    for a in alerts:
        a["explanation"] = explain(a)
    by_series_alerts = defaultdict(list)
    for a in alerts:
        by_series_alerts[(a.get("metric"), str(a.get("rank", "0")))].append(a)
    markers = _member_markers(records, alerts, by_series_alerts)

    bands = _bands(pts.get("window_stats", []))
    scores = _scores(pts.get("scores", []))
    bad_steps = {key: sorted(st for st, v in per.get("nonfinite", {}).items()
                             if v and st is not None) for key, per in scores.items()}

    training, internals, resources, infer = [], defaultdict(dict), defaultdict(list), {}
    by_metric: dict[str, list[str]] = defaultdict(list)
    for name, rank in series:
        by_metric[name].append(rank)
    for name in sorted(by_metric, key=_panel_order):
        ranks = sorted(by_metric[name], key=_rank_key)
        kind = series[(name, ranks[0])]["kind"]
        fam = _family(name)
        if fam is not None:
            s = series[(name, ranks[0])]
            internals[fam[0]][fam[1]] = (s["steps"], s["values"])
        elif kind == "system" or name in RESOURCE_TRAIN_METRICS:
            resources[name] = [_line(series[(name, r)], r) for r in ranks]
        elif kind == "infer":
            infer[name] = series[(name, ranks[0])]
        else:
            training.append(_training_panel(name, ranks, series, bands, scores,
                                            by_series_alerts, k, bad_steps))
    all_steps = [s for v in series.values() for s in v["steps"] if s is not None]
    all_ts = [t for v in series.values() for t in v["ts"]]
    t0, t1 = (min(all_ts), max(all_ts)) if all_ts else (None, None)
    inference = _inference(infer, scores, by_series_alerts) if infer else None
    panel_of = {p["metric"]: f"train-{p['metric']}" for p in training}
    panel_of.update({f"{fam}/{layer}": f"internals-{fam}" for fam, ls in internals.items()
                     for layer in ls})
    panel_of.update({name: f"res-{name}" for name in resources})
    if inference:
        panel_of.update({m: f"infer-{g}" for g, ms in inference["groups"].items() for m in ms})
    for a in alerts:
        a["panel"] = panel_of.get(a.get("metric"))
    opened = [a for a in alerts if a["status"] == "open"]
    return {
        "run": run, "k": k,
        "status": status,
        "health": run_health(alerts),
        "open_alerts": len(opened),
        "problem": (worst_first(opened) or [None])[0],
        "summary": _summary(series, metrics, alerts, all_steps, t0, t1, bad_steps),
        "training": training,
        "internals": [_heatmap(f, layers) for f, layers in sorted(internals.items())],
        "resources": [_resource_panel(name, lines) for name, lines in resources.items()],
        "inference": inference,
        "alerts": alerts,
        "markers": markers,
    }


def _stretches(bad: list, finite: list) -> list[list]:
    """Runs of non-finite steps as [first, last]: a finite value between two bad steps
    splits them (``finite``: the series' steps with finite values, sorted)."""
    out: list[list] = []
    for st in bad:
        if out and bisect.bisect_right(finite, out[-1][1]) == bisect.bisect_left(finite, st):
            out[-1][1] = st
        else:
            out.append([st, st])
    return out


_FIRST = ("loss", "val_loss", "accuracy", "val_accuracy", "grad_norm", "param_norm",
          "update_ratio", "lr")


def _panel_order(name: str):
    return (_FIRST.index(name) if name in _FIRST else len(_FIRST), name)


def _rank_key(r: str):
    return (0, int(r)) if r.isdigit() else (1, r)


def _bands(window_points: list[dict]) -> dict:
    """(metric, rank) -> sorted (last_step, mean, std) of the finest step window."""
    by = defaultdict(lambda: defaultdict(list))
    for p in window_points:
        t, f = p["tags"], p["fields"]
        w = t.get("window", "")
        if not w.startswith("step:"):
            continue
        by[(t.get("metric"), str(t.get("rank", "0")))][w].append(
            (f.get("last_step"), f.get("mean"), f.get("std")))
    out = {}
    for key, per in by.items():
        w = min(per, key=lambda w: _window_hop(w))
        out[key] = sorted(x for x in per[w] if x[0] is not None)
    return out


def _window_hop(w: str) -> int:
    spec = w.split(":", 1)[1]
    size, _, hop = spec.partition("/")
    try:
        return int(hop or size)
    except ValueError:
        return 1 << 30


def _scores(score_points: list[dict]) -> dict:
    """(metric, rank) -> {detector: {step: score}}."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for p in score_points:
        t, f = p["tags"], p["fields"]
        key = (t.get("metric"), str(t.get("rank", "0")))
        step = f.get("step")
        for det, v in f.items():
            if det != "step" and not isinstance(v, str):
                out[key][det][step] = v
    return out


def _line(s: dict, rank: str) -> dict:
    idx = _decimate(len(s["steps"]))
    host = s.get("host")
    return {"label": f"{host} rank {rank}" if host else f"rank {rank}", "rank": rank,
            "steps": [s["steps"][i] for i in idx],
            "values": [_num(s["values"][i]) for i in idx]}


def _member_markers(records: list[dict], incs: list[dict], by_series: dict) -> dict:
    """Markers for the findings that joined an incident, on their own metric's panel at
    their own step (the incident's own marker sits on its first finding's panel); keyed
    ``id@metric@rank``, added to ``by_series`` and returned by key."""
    head = {a.get("id"): a for a in incs}
    out: dict[str, dict] = {}
    for r in records:
        inc = head.get(r.get("id"))
        if inc is None or r.get("state") == "resolved":
            continue
        metric, rank = r.get("metric"), str(r.get("rank", "0"))
        if (metric, rank) == (inc.get("metric"), str(inc.get("rank", "0"))):
            continue
        key = f"{r.get('id')}@{metric}@{rank}"
        if key in out:
            continue
        m = {**inc, "key": key, "metric": metric, "rank": rank, "step": r.get("step"),
             "message": r.get("message", ""), "detector": r.get("detector"),
             "severity": r.get("severity", inc.get("severity")), "member": True}
        m["explanation"] = explain({**r, "state": inc.get("state")})
        out[key] = m
        by_series[(metric, rank)].append(m)
    return out


def _training_panel(name, ranks, series, bands, scores, alerts_by, k, bad_steps) -> dict:
    focus = max(ranks, key=lambda r: (len(alerts_by.get((name, r), [])), r == "0"))
    fs = series[(name, focus)]
    bad = bad_steps.get((name, focus), [])
    missing = ({a.get("step") for a in alerts_by.get((name, focus), [])} | set(bad)) \
        - set(fs["steps"])
    if missing:  # non-finite values are not stored: give them a place on the x axis
        pairs = sorted([*zip(fs["steps"], fs["values"], strict=True),
                        *((st, None) for st in missing if st is not None)],
                       key=lambda x: x[0])
        fs = {**fs, "steps": [x[0] for x in pairs], "values": [x[1] for x in pairs]}
    steps = np.asarray(fs["steps"], dtype=float)
    alerts = [a for r in ranks for a in alerts_by.get((name, r), [])]
    keep = {int(i) for a in alerts for i in np.flatnonzero(steps == a.get("step"))}
    stretches = _stretches(bad, sorted(st for st in series[(name, focus)]["steps"]
                                       if st is not None))
    keep |= {int(i) for st in stretches for e in st for i in np.flatnonzero(steps == e)}
    idx = _decimate(len(steps), keep)
    lines = []
    for r in ranks:
        s = series[(name, r)]
        if r == focus:
            vals = [_num(fs["values"][i]) for i in idx]
        else:  # align other ranks on the focus rank's steps
            m = dict(zip(s["steps"], s["values"], strict=True))
            vals = [_num(m.get(fs["steps"][i])) for i in idx]
        lines.append({"label": f"rank {r}" if len(ranks) > 1 else name, "values": vals})
    xs = [fs["steps"][i] for i in idx]
    lo = hi = mean = None
    band = bands.get((name, focus))
    if band:  # the last closed window before each step: what "normal" was at that step
        ends = np.asarray([b[0] for b in band], dtype=float)
        pos = np.searchsorted(ends, np.asarray(xs, dtype=float), side="left") - 1
        mean, lo, hi = [], [], []
        for p in pos.tolist():
            if p < 0 or band[p][1] is None:
                mean.append(None), lo.append(None), hi.append(None)
                continue
            m, sd = band[p][1], band[p][2] or 0.0
            mean.append(m), lo.append(m - k * sd), hi.append(m + k * sd)
    sc = {}
    for det, per in scores.get((name, focus), {}).items():
        if det != "nonfinite":  # 0 or 1: shaded as non-finite stretches instead
            sc[det] = [_unit_score(name, det, v) for v in _scores_at(per, xs)]
    return {"metric": name, "kind": fs["kind"], "focus_rank": focus, "steps": xs,
            "lines": lines, "band": {"mean": mean, "lo": lo, "hi": hi} if band else None,
            "scores": sc, "alert_ids": [a.get("key", a.get("id")) for a in alerts],
            "nonfinite": stretches}


def _scores_at(per: dict, xs) -> list:
    """A detector's score at each step of ``xs``: the one stored at that step, else the last
    one stored before it (TELLTALE_SCORES=notable stores abnormal values' scores and a
    trace of every 10th value); None before the first."""
    have = sorted(st for st in per if st is not None)
    out = []
    for x in xs:
        v = per.get(x)
        if v is None and x is not None:
            i = bisect.bisect_right(have, x) - 1
            v = per[have[i]] if i >= 0 else None
        out.append(v)
    return out


def _unit_score(metric: str, detector: str, v) -> float | None:
    """A detector's raw score on the alerts' 0..1 scale (1 = most anomalous), by the
    detector's own ``unit_score`` (the default configuration's parameters)."""
    v = _num(v)
    if v is None:
        return None
    from telltale.detectors.pipelines import default_pipelines

    return default_pipelines().semantics(metric, detector).unit_score(v)


def _heatmap(family: str, layers: dict) -> dict:
    names = sorted(layers)
    steps = sorted({s for st, _ in layers.values() for s in st})
    if len(steps) > 400:
        steps = steps[:: math.ceil(len(steps) / 400)]
    pos = {s: i for i, s in enumerate(steps)}
    z = []
    for name in names:
        row = [None] * len(steps)
        for s, v in zip(*layers[name], strict=True):
            if s in pos:
                row[pos[s]] = _num(v)
        z.append(row)
    return {"family": family, "layers": names, "steps": steps, "z": z}


def _resource_panel(name: str, lines: list[dict]) -> dict:
    meds = {ln["label"]: float(np.median([v for v in ln["values"] if v is not None]))
            for ln in lines if any(v is not None for v in ln["values"])}
    stragglers = []
    if len(meds) > 2:
        mid = float(np.median(list(meds.values())))
        for label, m in meds.items():
            if mid and abs(m - mid) / abs(mid) > 0.2:
                stragglers.append(label)
    steps = sorted({s for ln in lines for s in ln["steps"]})
    aligned = []
    for ln in lines:
        m = dict(zip(ln["steps"], ln["values"], strict=True))
        aligned.append({"label": ln["label"], "values": [m.get(s) for s in steps],
                        "median": meds.get(ln["label"])})
    return {"metric": name, "steps": steps, "lines": aligned, "outliers": stragglers}


# inference panels: (key, title, unit, [(series label, metric, statistic)]); one panel per
# unit, so a p50 never shares an axis with a rate, and each metric's alerts sit on its panel
INFER_PANELS = [
    ("latency", "latency", "ms", [("latency p50 ms", "latency_ms", "p50"),
                                  ("latency p99 ms", "latency_ms", "p99")]),
    ("ttft", "time to first token", "ms", [("ttft p50 ms", "ttft_ms", "p50"),
                                           ("ttft p99 ms", "ttft_ms", "p99")]),
    ("errors", "error rate", "fraction of requests", [("error rate", "error", "mean")]),
    ("tokens", "tokens/s", "tokens/s", [("tokens/s", "tokens_per_s", "mean")]),
]
_STAT = {"p50": lambda a: np.nanpercentile(a, 50), "p99": lambda a: np.nanpercentile(a, 99),
         "mean": np.nanmean}


def _inference(infer: dict, scores: dict, alerts_by) -> dict:
    base = infer.get("latency_ms") or next(iter(infer.values()))
    steps = base["steps"]
    buckets = range(0, len(steps), INFER_BUCKET)
    bucket_steps = [steps[min(i + INFER_BUCKET, len(steps)) - 1] for i in buckets]

    def per_bucket(name, fn):  # each metric aligned on the base's request steps
        m = dict(zip(infer[name]["steps"], infer[name]["values"], strict=True))
        v = np.asarray([np.nan if m.get(st) is None else m[st] for st in steps], dtype=float)
        return [_num(fn(v[i:i + INFER_BUCKET])) if np.isfinite(v[i:i + INFER_BUCKET]).any()
                else None for i in buckets]

    panels, groups = [], {}
    with np.errstate(all="ignore"):
        for key, title, unit, spec in INFER_PANELS:
            series = {label: per_bucket(m, _STAT[stat]) for label, m, stat in spec
                      if m in infer}
            if not series:
                continue
            metrics = sorted({m for _, m, _ in spec if m in infer})
            groups[key] = metrics
            panels.append({"key": key, "title": title, "unit": unit, "steps": bucket_steps,
                           "series": series, "alert_ids": [
                               a.get("key", a.get("id")) for m in metrics
                               for a in alerts_by.get((m, "0"), [])]})
    drift = {}
    for name in DRIFT_METRICS:
        for det, per in scores.get((name, "0"), {}).items() if name in infer else ():
            if det in ("nonfinite", "spikerate"):
                continue
            drift[f"{name} {det}"] = [_unit_score(name, det, v)
                                      for v in _scores_at(per, steps)]
    idx = _decimate(len(steps))
    return {"panels": panels, "groups": groups,
            "drift": {"steps": [steps[i] for i in idx],
                      "series": {k: [v[i] for i in idx] for k, v in drift.items()}}}


_LOWER_IS_BETTER = ("loss", "perplexity", "error")
_HIGHER_IS_BETTER = ("acc", "f1", "auc", "bleu")


def _summary(series, metrics, alerts, all_steps, t0, t1, bad_steps) -> dict:
    rows = []
    for (name, rank), s in sorted(series.items(), key=lambda x: (_panel_order(x[0][0]),
                                                                   _rank_key(x[0][1]))):
        if (_family(name) is not None or s["kind"] not in ("train", "eval")
                or name in RESOURCE_TRAIN_METRICS):
            continue
        vals = np.asarray([v for v in s["values"] if v is not None], dtype=float)
        fin = np.isfinite(vals)
        if not fin.any():
            continue
        lower = any(w in name for w in _LOWER_IS_BETTER)
        row = {"metric": name, "rank": rank, "kind": s["kind"],
               "final": _num(s["values"][-1]), "final_step": s["steps"][-1],
               "best": None, "best_step": None, "goal": None}
        bad = bad_steps.get((name, rank))
        if bad and bad[-1] > (s["steps"][-1] or 0):  # the last value logged is not finite
            row["final"], row["final_step"] = _nonfinite_value(alerts, name, rank), bad[-1]
        if lower or any(w in name for w in _HIGHER_IS_BETTER):  # no "best" lr or norm
            fv = vals[fin]
            best_i = int(np.argmin(fv) if lower else np.argmax(fv))
            fsteps = [st for st, v in zip(s["steps"], s["values"], strict=True)
                      if v is not None and math.isfinite(v)]
            row.update(best=_num(fv[best_i]), best_step=fsteps[best_i],
                       goal="min" if lower else "max")
        rows.append(row)
    rows = _collapse_ranks(rows)
    sev = defaultdict(int)
    for a in alerts:
        sev[a.get("severity")] += 1
    return {"events": len(metrics), "first_step": min(all_steps) if all_steps else None,
            "last_step": max(all_steps) if all_steps else None, "start_ts": t0, "end_ts": t1,
            "duration_s": (t1 - t0) if t0 is not None else None, "metrics": rows,
            "alerts": dict(sev), "nonfinite_events": sum(
                1 for p in metrics if p["fields"].get("nonfinite"))}


def _nonfinite_value(alerts, metric: str, rank: str) -> str:
    """How the page writes a non-finite final value: "NaN", "+inf" or "-inf" as the
    metric's last non-finite alert recorded it ("NaN" when none did)."""
    v = next((str(a.get("value")) for a in reversed(alerts) if a.get("detector") == "nonfinite"
              and a.get("metric") == metric and str(a.get("rank", "0")) == rank), "nan")
    return {"inf": "+inf", "-inf": "-inf"}.get(v.lower(), "NaN")


def _collapse_ranks(rows: list[dict]) -> list[dict]:
    """One row for a metric whose ranks all agree (global values such as grad_norm or lr)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["metric"]].append(r)
    out = []
    for r in rows:
        group = by[r["metric"]]
        if len(group) > 1 and all(g["final"] == group[0]["final"] and g["best"] == group[0]["best"]
                                  for g in group):
            if r is group[0]:
                out.append({**r, "rank": f"all {len(group)}"})
        else:
            out.append(r)
    return out
