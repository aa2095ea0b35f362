"""The trainfaults scorer (bench/trainfaults_score.py): hand-computed cases and the real labels."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data" / "trainfaults-dev"


def _load_scorer():
    name = "trainfaults_score"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "trainfaults_score.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


ts = _load_scorer()


def faulty(fault: str, onset: int, w: int, n_steps: int, extra=()) -> dict:
    win = [onset, onset + w]
    return {"fault": fault, "onset_step": onset, "window": win,
            "windows": [win, *[list(x) for x in extra]], "n_steps": n_steps}


def clean(n_steps: int) -> dict:
    return {"fault": None, "onset_step": None, "window": None, "windows": None,
            "n_steps": n_steps}


def make_labels() -> dict:
    return {"windows": {"nan": 1, "lr_spike": 20, "data_stall": 100, "memory_leak": 200},
            "runs": {
                "r-nan": faulty("nan", 100, 1, 200),
                "r-lr": faulty("lr_spike", 50, 20, 300),
                "r-stall": faulty("data_stall", 200, 100, 500,
                                  extra=[(200, 202), (350, 352), (400, 402)]),
                "r-leak": faulty("memory_leak", 10, 200, 400),
                "r-clean1": clean(1000),
                "r-clean2": clean(1500),
            }}


def A(run, step, metric="loss", detector="zscore") -> dict:
    return {"run": run, "step": step, "metric": metric, "detector": detector,
            "severity": "warning", "message": "x"}


def make_alerts() -> list[dict]:
    return [
        # lr_spike, window [50, 70]: before onset (false), two in window listed out of order
        # (both correct, delay from the earliest = 5), after the window (false)
        A("r-lr", 40, "lr"), A("r-lr", 60), A("r-lr", 55), A("r-lr", 90),
        # nan, window [100, 101]: at the window's inclusive end (delay 1), one step late (false)
        A("r-nan", 101), A("r-nan", 102),
        # data_stall, window [200, 300] + stall windows: 250 detects (delay 50); 351 and 402
        # are on later stalls (correct); 340 is between stalls (false)
        A("r-stall", 250, "step_time_s"), A("r-stall", 351, "step_time_s"),
        A("r-stall", 340, "step_time_s"), A("r-stall", 402, "cpu_percent"),
        # memory_leak, window [10, 210]: only an alert before the onset -> missed
        A("r-leak", 5, "rss_mb", "trend"),
        # clean runs: 3 alerts on 2500 steps -> 12 per 10k
        A("r-clean1", 17), A("r-clean1", 900), A("r-clean2", 3, "grad_norm", "spike"),
    ]


def test_hand_computed_report():
    r = ts.score_alerts(make_labels(), make_alerts())
    pf = r.per_fault
    assert list(pf) == ["nan", "lr_spike", "data_stall", "memory_leak"]  # labels' order
    assert (pf["nan"].runs, pf["nan"].detected, pf["nan"].delays) == (1, 1, [1])
    assert (pf["lr_spike"].detected, pf["lr_spike"].delays) == (1, [5])
    assert (pf["data_stall"].detected, pf["data_stall"].delays) == (1, [50])
    assert (pf["memory_leak"].detected, pf["memory_leak"].recall) == (0, 0.0)
    assert math.isnan(pf["memory_leak"].median_delay) and math.isnan(pf["memory_leak"].p90_delay)
    assert pf["lr_spike"].median_delay == 5 and pf["lr_spike"].p90_delay == 5

    assert (r.faulty_runs, r.detected_runs, r.recall) == (4, 3, 0.75)
    # delays [1, 5, 50]: median 5; p90 (linear) = 5 + 0.8 * 45 = 41
    assert r.median_delay == 5.0
    assert r.p90_delay == pytest.approx(41.0)

    assert (r.total_alerts, r.correct_alerts, r.false_alerts) == (14, 6, 8)
    assert r.precision == pytest.approx(6 / 14)
    assert (r.clean_runs, r.clean_steps, r.clean_alerts) == (2, 2500, 3)
    assert r.false_alarms_per_10k == pytest.approx(12.0)
    assert r.false_reasons == {"before_onset": 2, "after_window": 3, "clean": 3}

    runs = r.runs
    assert (runs["r-lr"].alerts, runs["r-lr"].correct, runs["r-lr"].false) == (4, 2, 2)
    assert (runs["r-stall"].correct, runs["r-stall"].delay) == (3, 50)
    assert (runs["r-leak"].detected, runs["r-leak"].delay) == (False, None)

    top = r.false_sources[0]
    assert (top.run, top.fault, top.metric, top.detector, top.count) == (
        "r-clean1", None, "loss", "zscore", 2)
    counts = {(s.run, s.metric, s.detector): s.count for s in r.false_sources}
    assert counts == {("r-clean1", "loss", "zscore"): 2, ("r-clean2", "grad_norm", "spike"): 1,
                      ("r-lr", "lr", "zscore"): 1, ("r-lr", "loss", "zscore"): 1,
                      ("r-nan", "loss", "zscore"): 1, ("r-stall", "step_time_s", "zscore"): 1,
                      ("r-leak", "rss_mb", "trend"): 1}
    assert sum(counts.values()) == r.false_alerts


def test_second_window_alert_does_not_change_delay():
    labels = make_labels()
    one = ts.score_alerts(labels, [A("r-lr", 55)])
    two = ts.score_alerts(labels, [A("r-lr", 55), A("r-lr", 70)])
    assert one.per_fault["lr_spike"].delays == two.per_fault["lr_spike"].delays == [5]
    assert (one.correct_alerts, two.correct_alerts) == (1, 2)
    assert one.precision == two.precision == 1.0


def test_alert_on_later_stall_is_correct_but_does_not_detect():
    r = ts.score_alerts(make_labels(), [A("r-stall", 350), A("r-stall", 352)])
    assert (r.correct_alerts, r.false_alerts, r.precision) == (2, 0, 1.0)
    assert r.per_fault["data_stall"].detected == 0  # only `window` detects
    assert r.runs["r-stall"].delay is None


def test_windows_inclusive_and_onset_alert_has_zero_delay():
    r = ts.score_alerts(make_labels(), [A("r-lr", 49), A("r-lr", 50), A("r-lr", 71)])
    assert r.per_fault["lr_spike"].delays == [0]
    assert (r.correct_alerts, r.false_alerts) == (1, 2)
    assert r.false_reasons == {"before_onset": 1, "after_window": 1}


def test_no_alerts():
    r = ts.score_alerts(make_labels(), [])
    assert math.isnan(r.precision)
    assert (r.recall, r.false_alarms_per_10k, r.total_alerts) == (0.0, 0.0, 0)
    assert math.isnan(r.median_delay) and math.isnan(r.p90_delay)
    text = ts.format_report(r)
    assert "precision  n/a" in text
    assert "sources of false alerts" not in text


def test_unknown_run_and_missing_step_are_false():
    r = ts.score_alerts(make_labels(), [A("r-other", 5), {"run": "r-lr", "step": None},
                                        A("r-lr", 60)])
    assert (r.total_alerts, r.correct_alerts, r.false_alerts) == (3, 1, 2)
    assert r.false_reasons == {"unknown_run": 1, "no_step": 1}
    assert r.clean_alerts == 0


def test_format_report_and_json():
    r = ts.score_alerts(make_labels(), make_alerts())
    text = ts.format_report(r)
    lines = text.splitlines()
    row = next(ln for ln in lines if ln.startswith("lr_spike"))
    assert row.split() == ["lr_spike", "1", "1", "1.00", "5.0", "5.0"]
    row = next(ln for ln in lines if ln.startswith("memory_leak"))
    assert row.split() == ["memory_leak", "1", "0", "0.00", "n/a", "n/a"]
    assert "precision  0.429  (6 correct / 14 alerts)" in text
    assert "false alarms / 10k clean steps  12.0" in text
    assert "top 7 sources of false alerts" in text
    doc = json.loads(json.dumps(r.to_dict(), allow_nan=False))  # NaN became null
    assert doc["per_fault"]["memory_leak"]["median_delay"] is None
    assert doc["precision"] == pytest.approx(6 / 14)


def test_cli_scores_an_alerts_file(tmp_path, capsys):
    (tmp_path / "labels.json").write_text(json.dumps(make_labels()))
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("".join(json.dumps(a) + "\n" for a in make_alerts()) + "\n")
    assert ts.main(["--data", str(tmp_path), "--alerts", str(alerts)]) == 0
    assert "precision  0.429" in capsys.readouterr().out
    assert ts.main(["--data", str(tmp_path), "--alerts", str(alerts), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["recall"], doc["total_alerts"], doc["clean_alerts"]) == (0.75, 14, 3)


def test_lifecycle_records_count_once_per_incident():
    """telltale.alert/2: only firing records are scored; updated/resolved are the same
    incident and must not add detections or false alarms."""
    def rec(run, step, state):
        return {**A(run, step), "state": state, "id": f"{run}-x"}

    labels = make_labels()
    plain = ts.score_alerts(labels, [A("r-lr", 55), A("r-clean1", 17)])
    life = ts.score_alerts(labels, [
        rec("r-lr", 55, "firing"), rec("r-lr", 66, "updated"), rec("r-lr", 90, "resolved"),
        rec("r-clean1", 17, "firing"), rec("r-clean1", 67, "resolved")])
    assert life.to_dict() | {"lifecycle_records": 0} == plain.to_dict()
    assert life.lifecycle_records == 3
    assert (life.total_alerts, life.correct_alerts, life.clean_alerts) == (2, 1, 1)
    assert "3 updated/resolved records of the same incidents not counted" in \
        ts.format_report(life)
    # a resolved record alone is not a detection
    only = ts.score_alerts(labels, [rec("r-lr", 60, "resolved")])
    assert only.detected_runs == 0 and only.total_alerts == 0


def test_real_labels():
    if not (DATA / "labels.json").is_file():
        pytest.fail(f"trainfaults-dev data missing under {SHARED}")
    labels = ts.load_labels(DATA)
    runs = labels["runs"]
    assert len(runs) == 18
    assert sum(1 for r in runs.values() if r["fault"] is not None) == 9
    assert sum(r["n_steps"] for r in runs.values() if r["fault"] is None) == 8465
    assert set(labels["windows"]) == {r["fault"] for r in runs.values() if r["fault"]}
    for r in runs.values():
        if r["fault"]:
            assert r["windows"][0] == r["window"]
            assert r["window"] == [r["onset_step"], r["onset_step"] + labels["windows"][r["fault"]]]
    r = ts.score_alerts(labels, [])
    assert (r.faulty_runs, r.clean_runs, r.clean_steps) == (9, 9, 8465)
