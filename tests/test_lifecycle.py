"""Alert lifecycle (streams/lifecycle.py) and explanations (streams/explain.py): pure tests."""

import json

import numpy as np
import pytest

from telltale.config import Config
from telltale.detectors import Finding
from telltale.detectors.growth import Growth
from telltale.detectors.state import dump_state, load_state
from telltale.schema import Event
from telltale.streams.explain import default_cause
from telltale.streams.lifecycle import AlertPolicy, AlertTracker
from telltale.streams.processor import Candidate, RunProcessor


def run_series(values_by_metric: dict, sizes=None, config=None, end=True):
    """Feed per-step metric values through a RunProcessor; return every alert record."""
    proc = RunProcessor(config or Config(windows=("step:100",)))
    n = len(next(iter(values_by_metric.values())))
    events = [Event("r", s + 1, 1e9 + s, "train", {m: v[s] for m, v in values_by_metric.items()})
              for s in range(n)]
    if end:
        events.append(Event("r", n, 1e9 + n, "end", {}))
    state, alerts, i = proc.new_state("r"), [], 0
    for b in sizes or [len(events)]:
        alerts += proc.process(state, events[i:i + b]).alerts
        state = load_state(dump_state(state))
        i += b
    return alerts, state


def noise(n, seed=0, level=1.0):
    return list(level + 0.01 * np.random.default_rng(seed).standard_normal(n))


def test_a_spike_fires_once_and_resolves_after_the_quiet_period():
    x = noise(400)
    x[200] = 5.0
    alerts, _ = run_series({"custom": x})
    assert [(a["state"], a["step"]) for a in alerts] == [("firing", 201), ("resolved", 251)]
    f, r = alerts
    assert f["id"] == r["id"] and f["schema"] == "telltale.alert/2"
    assert 0 < f["score"] <= 1 and f["first_step"] == f["last_step"] == 201
    assert "σ above its 100-value mean" in f["explanation"] and "steps 100–199" in \
        f["explanation"]


def test_nan_stays_open_while_broken_and_resolves_when_the_run_ends():
    x = noise(300)
    x[150:] = [float("nan")] * 150
    alerts, state = run_series({"loss": x})
    assert [(a["state"], a["detector"]) for a in alerts] == [("firing", "nonfinite"),
                                                           ("resolved", "nonfinite")]
    assert alerts[1]["step"] == 300 and alerts[1]["stats"]["resolved_because"] == "run ended"
    assert alerts[0]["severity"] == "critical" and alerts[0]["cause"]  # known rule
    assert state["ended"] and state["alerts"]["open"] == {}


def test_flapping_metric_reopens_one_incident_instead_of_paging():
    x = noise(1000)
    for s in range(30, 1000, 30):  # broken every 30 steps, for one step
        x[s] = float("nan")
    alerts, _ = run_series({"custom": x}, sizes=[13] * 80)
    ids = {a["id"] for a in alerts}
    # one incident: firing, one resolve + reopen, reminders at most every 200 steps, resolved
    assert len(ids) == 1 and len(alerts) <= 3 + 1000 // 200
    assert [a["state"] for a in alerts].count("firing") == 1
    assert alerts[-1]["state"] == "resolved"


def test_storm_guard_caps_records_per_window_of_steps():
    metrics = {f"m{i}": noise(300, seed=i) for i in range(30)}
    for v in metrics.values():
        v[150] = 9.0
    policy = AlertPolicy(storm_max=10, storm_steps=100)
    cfg = Config(windows=("step:100",))
    proc = RunProcessor(cfg)
    proc.alerts = AlertTracker(policy, "step:100")
    state = proc.new_state("r")
    events = [Event("r", s + 1, 1e9 + s, "train", {m: v[s] for m, v in metrics.items()})
              for s in range(300)]
    alerts = proc.process(state, events).alerts + proc.flush(state).alerts
    firing = [a for a in alerts if a["state"] == "firing"]
    assert len(firing) == 10
    resolved = [a for a in alerts if a["state"] == "resolved"]
    assert {a["id"] for a in resolved} == {a["id"] for a in firing}  # held-back never resolve
    assert state["alerts"]["held"] == 20


def cand(step, severity="warning", score=7.0, detector="zscore", metric="loss"):
    return Candidate(metric, "0", "train", step, 1e9 + step, 3.0,
                     Finding(0, detector, severity, score, "is high", {"mean": 1.0, "std": 0.3,
                                                                        "n": 100}))


def seen(steps, metric="loss"):
    s = np.asarray(steps, dtype=np.int64)
    return {f"{metric}|0": (s, s + 1e9, np.ones(len(s)), {})}


def test_updates_only_on_escalation_or_at_a_bounded_rate():
    t = AlertTracker(AlertPolicy(update_every=60))
    state = {"run": "r"}
    recs = t.process(state, [cand(10)], seen(range(1, 11)))
    recs += t.process(state, [cand(20), cand(30)], seen(range(11, 31)))  # nothing new to say
    recs += t.process(state, [cand(40, "critical")], seen(range(31, 41)))  # escalation
    recs += t.process(state, [cand(60, "warning"), cand(90)], seen(range(41, 91)))
    recs += t.process(state, [cand(105)], seen(range(91, 106)))  # rate-limited update
    assert [(r["state"], r["step"], r["severity"]) for r in recs] == [
        ("firing", 10, "warning"), ("updated", 40, "critical"), ("updated", 105, "critical")]
    assert len({r["id"] for r in recs}) == 1  # never de-escalates, one incident
    assert "severity rose" in recs[1]["message"] and recs[2]["stats"]["findings"] == 7


def test_refire_within_cooldown_keeps_the_id_and_later_refire_is_new():
    t = AlertTracker(AlertPolicy(cooldown=100))
    state = {"run": "r"}
    recs = t.process(state, [cand(10)], seen(range(1, 100)))  # resolves at 60
    recs += t.process(state, [cand(120)], seen(range(100, 121)))  # 60 steps later: reopen
    recs += t.process(state, [], seen(range(121, 500)))  # resolves after 2×50 quiet steps
    recs += t.process(state, [cand(600)], seen(range(500, 601)))  # long after: new incident
    assert [(r["state"], r["step"]) for r in recs] == [
        ("firing", 10), ("resolved", 60), ("updated", 120), ("resolved", 220), ("firing", 600)]
    assert len({r["id"] for r in recs[:4]}) == 1 and recs[4]["id"] != recs[0]["id"]


def test_policy_file_overrides_resolution_per_metric_family(tmp_path):
    p = tmp_path / "policy.json"
    p.write_text(json.dumps({"resolve_after": {"*loss*:zscore": 5, "zscore": 70}}))
    pol = AlertPolicy.from_file(str(p))
    assert pol.resolve_steps("val_loss", "zscore") == 5
    assert pol.resolve_steps("grad_norm", "zscore") == 70
    # no policy entry: the detector's own resolve_after
    assert pol.resolve_steps("rss_mb", "growth", Growth().resolve_after) == 150
    t = AlertTracker(AlertPolicy(resolve_after={"zscore": 0}))  # 0: only when the run ends
    state = {"run": "r"}
    recs = t.process(state, [cand(10)], seen(range(1, 500)))
    recs += t.close(state)
    assert [(r["state"], r["step"]) for r in recs] == [("firing", 10), ("resolved", 499)]
    p.write_text(json.dumps({"resolve": 5}))
    with pytest.raises(ValueError, match="unknown alert policy keys"):
        AlertPolicy.from_file(str(p))


def val_loss_alert(loss):
    events = []
    for s in range(1, len(loss) + 1):
        events.append(Event("r", s, 1e9 + s, "train", {"loss": loss[s - 1]}))
        if s % 10 == 0:
            v = 1.0 + 0.01 * np.sin(s) if s < 380 else 3.0
            events.append(Event("r", s, 1e9 + s, "eval", {"val_loss": v}))
    proc = RunProcessor(Config(windows=("step:100",)))
    alerts = proc.process(proc.new_state("r"), events).alerts
    return next(a for a in alerts if a["metric"] == "val_loss")


def test_explanation_tells_overfitting_from_a_run_going_wrong():
    a = val_loss_alert(list(np.linspace(2.0, 0.2, 400)))
    assert "val_loss 3 at step 380 is" in a["explanation"]
    assert "while loss keeps falling" in a["explanation"]
    assert a["cause"] == "overfitting onset" and "early stopping" in a["action"]
    b = val_loss_alert(list(np.linspace(0.2, 2.0, 400)))
    assert "and loss is rising too" in b["explanation"] and "not overfitting" in b["cause"]


def test_multivariate_findings_name_their_contributors():
    c = cand(10, detector="iforest", score=0.9)
    c.finding.contributors = ["loss", "grad_norm"]
    rec = AlertTracker().process({"run": "r"}, [c], seen([10]))[0]
    assert rec["contributors"] == ["loss", "grad_norm"] and rec["score"] == 0.9
    assert "contributors: loss, grad_norm" in rec["explanation"]


def test_default_causes():
    assert "learning rate" in default_cause("loss", "divergence")[1]
    assert "leak" in default_cause("rss_mb", "growth")[0]
    assert default_cause("mystery", "zscore") == ("", "")
