"""Score alerts against the trainfaults labels (the convention of the data set's README).

    python bench/trainfaults_score.py --data DIR --alerts ALERTS.jsonl [--json]
    python bench/trainfaults_score.py --data DIR --run-detect [--save-alerts PATH] [--json]

Scoring (trainfaults-dev README, "Scoring"):

- a faulty run is *detected* when at least one alert (matched on ``run`` and ``step``) falls in
  its ``window`` (both ends inclusive); *delay* = step of the first such alert - ``onset_step``;
  *recall* per fault type = detected runs / runs;
- an alert is *correct* when its step falls in any of its run's ``windows``; every other alert
  on a faulty run and every alert on a clean run is *false*; *precision* = correct / all alerts
  (NaN, printed "n/a", when there are no alerts);
- *false alarms per 10k clean steps* = alerts on clean runs / sum of clean runs' ``n_steps``
  x 10,000;
- median and 90th percentile (numpy, linear) of the delay per fault type and overall.

Alerts on runs that are not in the labels, or without a numeric step, can never be correct:
they count as false (and in precision's denominator) and are reported separately.

Alert records with a lifecycle (schema ``telltale.alert/2``) count once per incident: only
``firing`` records are scored (at the step the incident started); ``updated`` and
``resolved`` records of the same incident are ignored (``lifecycle_records`` says how many).
Records without a ``state`` (older schemas, other tools) all count.

Importing this module has no side effects; the CLI lives in ``main``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

NAN = float("nan")


# -- labels ---------------------------------------------------------------------------


def load_labels(root: str | os.PathLike) -> dict:
    """Read ``<root>/labels.json`` (the whole document: ``runs``, ``windows``, ...)."""
    path = Path(root) / "labels.json"
    with open(path) as f:
        labels = json.load(f)
    if not isinstance(labels.get("runs"), dict):
        raise ValueError(f"{path}: no 'runs' map")
    return labels


def load_alerts(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of alerts (blank lines skipped)."""
    alerts = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    alerts.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: not JSON: {e}") from None
    return alerts


# -- scoring --------------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    runs: int = 0
    detected: int = 0
    recall: float = NAN
    delays: list[int | float] = field(default_factory=list)
    median_delay: float = NAN
    p90_delay: float = NAN


@dataclass
class RunResult:
    run: str
    fault: str | None
    n_steps: int
    onset_step: int | None
    detected: bool
    delay: int | float | None
    alerts: int
    correct: int
    false: int


@dataclass
class FalseSource:
    run: str
    fault: str | None  # None = clean run; "?" = run not in the labels
    metric: str
    detector: str
    count: int


@dataclass
class Report:
    per_fault: dict[str, FaultRow]
    runs: dict[str, RunResult]
    faulty_runs: int
    detected_runs: int
    recall: float
    median_delay: float
    p90_delay: float
    total_alerts: int
    correct_alerts: int
    false_alerts: int
    precision: float
    clean_runs: int
    clean_steps: int
    clean_alerts: int
    false_alarms_per_10k: float
    # why the false alerts were false: clean / before_onset / after_window / unknown_run /
    # no_step
    false_reasons: dict[str, int]
    false_sources: list[FalseSource]  # every (run, metric, detector), most false alerts first
    lifecycle_records: int = 0  # updated/resolved records not scored (not new incidents)
    # incidents (firing records) per faulty run: max and mean
    incidents_max: int = 0
    incidents_mean: float = NAN
    acute_median_delay: float = NAN  # over the detected runs of the acute fault types
    straggler_runs: int = 0
    straggler_named: int = 0  # straggler runs with an alert that names the slow rank
    by_detector: dict = field(default_factory=dict)  # detector -> [correct, false] firings

    def to_dict(self) -> dict:
        """Plain JSON-safe data (NaN -> None)."""
        return _json_safe(asdict(self))


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _step(alert: dict) -> int | float | None:
    s = alert.get("step")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
        return None
    return s


def _inside(step, win) -> bool:
    return win is not None and win[0] <= step <= win[1]


def _median_p90(values) -> tuple[float, float]:
    if not values:
        return NAN, NAN
    a = np.asarray(values, dtype=float)
    return float(np.median(a)), float(np.percentile(a, 90))


def score_alerts(labels: dict, alerts: list[dict]) -> Report:
    """Score ``alerts`` (dicts with at least ``run`` and ``step``) against ``labels``.

    ``labels`` is what ``load_labels`` returns (only its ``runs`` map is used). Each run needs
    ``fault`` (None = clean), ``n_steps`` and, when faulty, ``onset_step``, ``window`` and
    ``windows`` (``window`` is used when ``windows`` is missing).
    """
    runs_lab: dict[str, dict] = labels["runs"]
    order = list(labels.get("windows") or {})
    n_all = len(alerts)
    every = alerts
    alerts = [a for a in alerts if a.get("state", "firing") == "firing"]
    by_det: dict[str, list[int]] = {}

    by_run: dict[str, list[dict]] = {}
    for a in alerts:
        by_run.setdefault(a.get("run"), []).append(a)

    reasons: Counter = Counter()
    sources: Counter = Counter()
    per_fault: dict[str, FaultRow] = {}
    results: dict[str, RunResult] = {}
    n_correct = 0
    clean_steps = clean_alerts = clean_runs = 0

    def blame(a: dict, fault, reason: str) -> None:
        reasons[reason] += 1
        sources[(str(a.get("run")), fault, str(a.get("metric", "?")),
                 str(a.get("detector", "?")))] += 1

    for run, lab in runs_lab.items():
        fault = lab.get("fault")
        run_alerts = by_run.get(run, [])
        n_steps = int(lab.get("n_steps") or 0)
        correct = 0
        detected, delay = False, None
        if fault is None:
            clean_runs += 1
            clean_steps += n_steps
            clean_alerts += len(run_alerts)
            for a in run_alerts:
                blame(a, None, "clean")
                by_det.setdefault(str(a.get("detector", "?")), [0, 0])[1] += 1
        else:
            onset = lab["onset_step"]
            window = lab["window"]
            windows = lab.get("windows") or [window]
            in_window = []
            for a in run_alerts:
                s = _step(a)
                if s is None:
                    blame(a, fault, "no_step")
                    continue
                if _inside(s, window):
                    in_window.append(s)
                ok = any(_inside(s, w) for w in windows)
                by_det.setdefault(str(a.get("detector", "?")), [0, 0])[0 if ok else 1] += 1
                if ok:
                    correct += 1
                else:
                    blame(a, fault, "before_onset" if s < onset else "after_window")
            if in_window:
                detected, delay = True, min(in_window) - onset
            row = per_fault.setdefault(fault, FaultRow(fault))
            row.runs += 1
            if detected:
                row.detected += 1
                row.delays.append(delay)
        n_correct += correct
        results[run] = RunResult(run, fault, n_steps, lab.get("onset_step"), detected, delay,
                                 len(run_alerts), correct, len(run_alerts) - correct)

    for run, run_alerts in by_run.items():
        if run not in runs_lab:
            for a in run_alerts:
                blame(a, "?", "unknown_run")

    for row in per_fault.values():
        row.recall = row.detected / row.runs
        row.median_delay, row.p90_delay = _median_p90(row.delays)
    rank = {f: i for i, f in enumerate(order)}
    per_fault = dict(sorted(per_fault.items(), key=lambda kv: (rank.get(kv[0], len(rank)),
                                                               kv[0])))

    faulty = sum(r.runs for r in per_fault.values())
    detected_runs = sum(r.detected for r in per_fault.values())
    all_delays = [d for r in per_fault.values() for d in r.delays]
    med, p90 = _median_p90(all_delays)
    total = len(alerts)
    per_faulty = [r.alerts for r in results.values() if r.fault is not None]
    acute = set(labels.get("acute") or [])
    acute_delays = [d for r in per_fault.values() if r.fault in acute for d in r.delays]
    strag = [run for run, lab in runs_lab.items() if lab.get("fault") == "straggler"]
    named = 0
    for run in strag:
        rank = str(runs_lab[run].get("rank"))
        named += any(str(a.get("rank")) == rank and f"rank {rank}" in
                     str(a.get("explanation", "")) for a in every if a.get("run") == run)
    src = [FalseSource(run, fault, metric, det, n)
           for (run, fault, metric, det), n in sources.items()]
    src.sort(key=lambda s: (-s.count, s.run, s.metric, s.detector))
    return Report(
        per_fault=per_fault, runs=results, faulty_runs=faulty, detected_runs=detected_runs,
        recall=detected_runs / faulty if faulty else NAN, median_delay=med, p90_delay=p90,
        total_alerts=total, correct_alerts=n_correct, false_alerts=total - n_correct,
        precision=n_correct / total if total else NAN,
        clean_runs=clean_runs, clean_steps=clean_steps, clean_alerts=clean_alerts,
        false_alarms_per_10k=clean_alerts / clean_steps * 10_000 if clean_steps else NAN,
        false_reasons=dict(reasons), false_sources=src, lifecycle_records=n_all - total,
        incidents_max=max(per_faulty, default=0),
        incidents_mean=float(np.mean(per_faulty)) if per_faulty else NAN,
        acute_median_delay=_median_p90(acute_delays)[0], straggler_runs=len(strag),
        straggler_named=named, by_detector=dict(sorted(by_det.items())))


# -- report ---------------------------------------------------------------------------


def _num(x, fmt: str = "{:.0f}") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt.format(x)


def format_report(report: Report, top: int = 10) -> str:
    r = report
    lines = [f"{'fault type':<20} {'runs':>4} {'det':>4} {'recall':>7} {'med delay':>9} "
             f"{'p90 delay':>9}"]
    lines.append("-" * len(lines[0]))
    for row in r.per_fault.values():
        lines.append(f"{row.fault:<20} {row.runs:>4} {row.detected:>4} "
                     f"{_num(row.recall, '{:.2f}'):>7} {_num(row.median_delay, '{:.1f}'):>9} "
                     f"{_num(row.p90_delay, '{:.1f}'):>9}")
    lines.append("-" * len(lines[0]))
    lines.append(f"{'all faults':<20} {r.faulty_runs:>4} {r.detected_runs:>4} "
                 f"{_num(r.recall, '{:.2f}'):>7} {_num(r.median_delay, '{:.1f}'):>9} "
                 f"{_num(r.p90_delay, '{:.1f}'):>9}")
    lines.append("")
    lines.append(f"recall     {_num(r.recall, '{:.3f}')}  ({r.detected_runs}/{r.faulty_runs} "
                 "faulty runs)")
    lines.append(f"precision  {_num(r.precision, '{:.3f}')}  ({r.correct_alerts} correct / "
                 f"{r.total_alerts} alerts)")
    lines.append(f"false alarms / 10k clean steps  {_num(r.false_alarms_per_10k, '{:.1f}')}  "
                 f"({r.clean_alerts} alerts on {r.clean_runs} clean runs, "
                 f"{r.clean_steps} steps)")
    lines.append(f"acute median delay  {_num(r.acute_median_delay, '{:.1f}')} steps;  "
                 f"incidents per faulty run: max {r.incidents_max}, mean "
                 f"{_num(r.incidents_mean, '{:.2f}')};  straggler rank named "
                 f"{r.straggler_named}/{r.straggler_runs}")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.false_reasons.items(),
                                                      key=lambda kv: -kv[1]))
    lines.append(f"total alerts {r.total_alerts}: {r.correct_alerts} correct, "
                 f"{r.false_alerts} false" + (f" ({reasons})" if reasons else ""))
    if r.lifecycle_records:
        lines.append(f"(alerts = incidents: firing records; {r.lifecycle_records} updated/"
                     "resolved records of the same incidents not counted)")
    if r.false_sources:
        lines.append("")
        lines.append(f"top {min(top, len(r.false_sources))} sources of false alerts "
                     f"(of {len(r.false_sources)}):")
        lines.append(f"  {'count':>5}  {'run':<11} {'fault':<20} {'metric':<16} detector")
        for s in r.false_sources[:top]:
            lines.append(f"  {s.count:>5}  {s.run:<11} {s.fault or 'clean':<20} "
                         f"{s.metric:<16} {s.detector}")
    return "\n".join(lines)


# -- running the project's own detector -----------------------------------------------


def run_detect(data: Path, alerts_out: Path, workdir: Path) -> dict:
    """Concatenate ``runs/*.jsonl`` (sorted by name) and run ``telltale detect`` on them."""
    files = sorted((data / "runs").glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no runs/*.jsonl under {data}")
    events_path = workdir / "all-events.jsonl"
    n_events = 0
    with open(events_path, "w") as out:
        for p in files:
            with open(p) as f:
                for line in f:
                    if line.strip():
                        out.write(line if line.endswith("\n") else line + "\n")
                        n_events += 1
    cmd = [sys.executable, "-m", "telltale", "detect", str(events_path), "--out", str(alerts_out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n"
                           f"{proc.stderr[-4000:]}")
    return {"runs": len(files), "events": n_events, "seconds": seconds,
            "events_per_s": n_events / seconds if seconds > 0 else NAN,
            "stderr": proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="trainfaults data dir (labels.json, runs/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--alerts", help="alerts to score (JSONL, one alert per line)")
    src.add_argument("--run-detect", action="store_true",
                     help="produce the alerts with 'python -m telltale detect' on all runs")
    p.add_argument("--save-alerts", help="with --run-detect: keep the alerts file here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--top", type=int, default=10, help="false-alert sources to list (10)")
    args = p.parse_args(argv)

    data = Path(args.data)
    labels = load_labels(data)
    detect_info = None
    if args.run_detect:
        with tempfile.TemporaryDirectory(prefix="trainfaults-") as tmp:
            out = Path(args.save_alerts) if args.save_alerts else Path(tmp) / "alerts.jsonl"
            detect_info = run_detect(data, out, Path(tmp))
            alerts = load_alerts(out)
        msg = (f"detect: {detect_info['events']} events of {detect_info['runs']} runs in "
               f"{detect_info['seconds']:.2f} s ({detect_info['events_per_s']:,.0f} events/s, "
               f"incl. interpreter start), {len(alerts)} alerts")
        print(msg, file=sys.stderr if args.json else sys.stdout)
    else:
        alerts = load_alerts(args.alerts)

    report = score_alerts(labels, alerts)
    if args.json:
        doc = report.to_dict()
        if detect_info is not None:
            doc["detect"] = _json_safe(detect_info)
        print(json.dumps(doc, indent=1))
    else:
        if detect_info is not None:
            print()
        print(format_report(report, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
