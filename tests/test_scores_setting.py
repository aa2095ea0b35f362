"""TELLTALE_SCORES: which detector scores become ``scores`` points (all | notable | none)."""


import numpy as np
import pytest

from telltale.config import Config, ConfigError
from telltale.detectors.state import dump_state, load_state
from telltale.schema import Event
from telltale.simulate import DEMO_RUNS, simulate
from telltale.streams.processor import SCORE_TRACE_EVERY, RunProcessor


def run_points(scores: str, sim, sizes=None):
    proc = RunProcessor(Config(scores=scores))
    events = [Event(sim.run, s, ts, k, m) for s, ts, k, m in simulate(sim, t0=1e9)]
    state, points, alerts, i = proc.new_state(sim.run), [], [], 0
    for b in sizes or [len(events)]:
        out = proc.process(state, events[i:i + b])
        state = load_state(dump_state(state))  # what the Faust table stores
        points += out.all_points()
        alerts += out.alerts
        i += b
    return points, alerts


def by_measurement(points, m):
    return sorted((sorted(p.tags.items()), p.time_ns, sorted(p.fields.items()))
                  for p in points if p.measurement == m)


def test_the_setting_is_read_and_checked():
    assert Config().scores == "notable"
    assert Config.from_env({"TELLTALE_SCORES": " All "}).scores == "all"
    with pytest.raises(ConfigError, match="TELLTALE_SCORES='every'.*all, notable, none"):
        Config.from_env({"TELLTALE_SCORES": "every"})


@pytest.mark.parametrize("sim", DEMO_RUNS[1:3], ids=lambda s: s.fault)
def test_notable_keeps_raw_values_alerts_and_every_abnormal_score(sim):
    p_all, a_all = run_points("all", sim)
    p_not, a_not = run_points("notable", sim)
    p_none, a_none = run_points("none", sim)
    assert a_all == a_not == a_none and a_all  # the alerts do not depend on the setting
    for m in ("metrics", "window_stats", "alerts"):
        assert by_measurement(p_all, m) == by_measurement(p_not, m) == by_measurement(p_none, m)
    s_all, s_not = by_measurement(p_all, "scores"), by_measurement(p_not, "scores")
    assert by_measurement(p_none, "scores") == []
    assert set(map(repr, s_not)) <= set(map(repr, s_all))  # a subset, the same values
    assert len(s_not) < len(s_all) / 3
    # every alert's own score row is there: the step of each firing, per series
    kept = {(dict(t)["metric"], dict(t)["rank"], dict(f)["step"]) for t, _, f in s_not}
    firing = {(a["metric"], a["rank"], a["step"]) for a in a_all if a["state"] == "firing"
              and a["detector"] not in ("nonfinite",)}
    series = {(dict(t)["metric"], dict(t)["rank"]) for t, _, _ in s_all}
    assert {f for f in firing if f[:2] in series} <= kept
    # and every row where a detector is abnormal in its own terms (a z-score beyond half
    # its threshold, ...)
    pipes = RunProcessor(Config()).pipelines

    def abnormal(row):
        metric, fields = dict(row[0])["metric"], dict(row[2])
        return any(det.abnormal(np.array([0.0]), np.array([fields[det.name]]))[0]
                   for det in pipes.for_metric(metric) if det.name in fields)

    big = [r for r in s_all if abnormal(r)]
    assert set(map(repr, big)) <= set(map(repr, s_not))
    assert big or sim.fault != "spike"


def test_notable_trace_is_every_nth_value_of_a_series_however_batched():
    sim = DEMO_RUNS[0]  # clean: the trace is (nearly) all there is
    p1, _ = run_points("notable", sim)
    p2, _ = run_points("notable", sim, [7] * 200)
    assert by_measurement(p1, "scores") == by_measurement(p2, "scores")
    loss = sorted(dict(f)["step"] for t, _, f in by_measurement(p1, "scores")
                  if dict(t)["metric"] == "loss")
    # the trace's gaps are at most SCORE_TRACE_EVERY steps (loss comes every step)
    assert loss and int(np.diff(loss).max()) <= SCORE_TRACE_EVERY


def test_notable_thins_the_run_rules_step_scores_too():
    """The multivariate step scores (one row per step) keep the high ones and a trace."""
    sim = DEMO_RUNS[1]
    p_all, _ = run_points("all", sim)
    p_not, _ = run_points("notable", sim, [50] * 20)

    def rows(points):
        return [r for r in by_measurement(points, "scores") if dict(r[0])["metric"] ==
                "step_vector"]

    r_all, r_not = rows(p_all), rows(p_not)
    assert r_all and set(map(repr, r_not)) <= set(map(repr, r_all))
    assert len(r_not) < len(r_all) / 2  # a short demo run: many steps score high
    high = [r for r in r_all if any(v >= 0.99 for k, v in r[2] if k != "step")]
    assert set(map(repr, high)) <= set(map(repr, r_not))
