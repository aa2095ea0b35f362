"""Each training fault on a synthetic run fires one incident; its clean twin stays quiet.

A small generator draws a plausible training run (loss falling with batch noise, accuracy,
gradient and weight norms consistent with the update ratio, step times with rare garbage-
collector pauses, evaluations, system metrics); each fault is injected into a copy drawn
from the same seed. The default configuration runs on both, through the pure processor.
Also here: one incident per problem, and parameter errors that name the parameter.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from telltale.config import Config
from telltale.detectors import REGISTRY
from telltale.detectors.base import AlertSemantics
from telltale.detectors.pipelines import Pipelines, _run_rule_registry
from telltale.detectors.state import dump_state, load_state
from telltale.schema import Event
from telltale.streams.processor import RunProcessor


def training_run(seed: int, steps: int = 900, ranks: int = 1, fault: str | None = None,
                 onset: int = 450, rank_slow: int = 2) -> list[Event]:
    """Events of one synthetic run, with ``fault`` injected from ``onset``."""
    rng = np.random.default_rng(seed)
    ev = []
    pn, lr0 = 12.0, 0.05
    rss = 300.0
    leak = 0.0
    for s in range(1, steps + 1):
        lr = lr0 * (0.1 if s > 0.7 * steps else 1.0)  # a step decay: normal
        if fault == "lr_spike" and s >= onset:
            lr *= 300
        base_loss = 2.3 * math.exp(-s / 150) + 0.15
        if fault == "label_noise" and s >= onset:
            base_loss = 2.25
        ur = 0.02 * lr / lr0 * (1 + 0.2 * rng.random())
        if fault == "lr_spike" and s >= onset:
            base_loss *= math.exp(min(s - onset, 20) / 3)
            ur = min(0.5, ur * 100)
        pn *= 1 + ur * (0.6 * rng.random() - 0.2)  # |Δ norm| ≤ the update's norm
        if fault == "vanishing" and s == onset:
            pn *= 0.85  # a layer's weights scaled down, outside the optimizer
        st_base = 0.004 * (1 + 0.05 * rng.standard_normal())
        if fault == "slowdown" and s >= onset:
            st_base *= 2.6
        if rng.random() < 0.003:  # a garbage-collector pass: a lone slow step
            st_base += 0.2
        if fault == "data_stall" and s >= onset and (s - onset) % 17 == 0:
            st_base += 0.3
        for r in range(ranks):
            st = st_base * (1 + 0.03 * rng.standard_normal())
            if fault == "straggler" and s >= onset and r == rank_slow:
                st *= 2.5
            loss = base_loss * math.exp(0.15 * rng.standard_normal())
            if fault == "nan" and s >= onset:
                loss = float("nan")
            m = {"loss": loss, "accuracy": float(np.clip(1.05 - loss / 2.4, 0, 1)),
                 "grad_norm": 1.5 * base_loss * math.exp(0.2 * rng.standard_normal()),
                 "lr": lr, "step_time_s": st, "samples_per_s": 64 / st,
                 "param_norm": pn, "update_ratio": ur}
            if fault == "nan" and s >= onset:
                m.update(grad_norm=float("nan"), param_norm=float("nan"))
            ev.append(Event("run", s, 1e9 + s, "train", m,
                            {"rank": str(r), "host": f"node-{r // 2}"}))
        if s % 20 == 0:
            val = 2.3 * math.exp(-s / 150) + 0.2 + 0.01 * rng.standard_normal()
            if fault == "overfit" and s > onset:
                val = 2.3 * math.exp(-onset / 150) + 0.2 + 0.004 * (s - onset)
            if fault in ("lr_spike", "label_noise") and s >= onset:
                val = base_loss + 0.1
            ev.append(Event("run", s, 1e9 + s, "eval", {"val_loss": val}, {"rank": "0"}))
        if s % 10 == 0:
            if fault == "memory_leak" and s >= onset:
                leak += 0.5 * 10
            rss_now = rss + leak + 0.3 * rng.standard_normal()
            ev.append(Event("run", s, 1e9 + s, "system", {"rss_mb": rss_now,
                                                           "cpu_percent": 99.0},
                            {"rank": "0"}))
    return ev


def run_alerts(events, size: int = 64) -> list[dict]:
    proc = RunProcessor(Config())
    state, alerts = proc.new_state("run"), []
    for i in range(0, len(events), size):
        alerts += proc.process(state, events[i:i + size]).alerts
        state = load_state(dump_state(state))
    return alerts + proc.flush(state).alerts


def firing(alerts):
    return [a for a in alerts if a["state"] == "firing"]


@pytest.mark.parametrize("seed", [1, 2])
def test_clean_twins_raise_nothing(seed):
    assert firing(run_alerts(training_run(seed))) == []
    assert firing(run_alerts(training_run(seed, ranks=4))) == []


@pytest.mark.parametrize("fault,window,detectors", [
    ("nan", 1, {"nonfinite"}),
    ("lr_spike", 20, {"jump", "zscore", "divergence"}),
    ("vanishing", 20, {"weights"}),
    ("slowdown", 50, {"levelshift"}),
    ("data_stall", 100, {"spikerate"}),
    ("label_noise", 100, {"zscore", "divergence"}),
    ("overfit", 100, {"overfit"}),
    ("memory_leak", 200, {"growth"}),
])
def test_each_fault_fires_one_incident_in_its_window(fault, window, detectors):
    onset = 450
    alerts = run_alerts(training_run(1, fault=fault, onset=onset))
    fired = firing(alerts)
    assert len(fired) == 1, [(a["step"], a["metric"], a["detector"]) for a in fired]
    (a,) = fired
    assert onset <= a["step"] <= onset + window and a["detector"] in detectors
    assert 0 < a["score"] <= 1 and a["explanation"] and a["cause"]


def test_a_straggler_is_named_with_its_host():
    alerts = run_alerts(training_run(3, ranks=4, fault="straggler", rank_slow=2))
    (a,) = firing(alerts)
    assert a["detector"] == "straggler" and a["rank"] == "2" and 450 <= a["step"] <= 500
    assert {"rank 2", "host node-1"} <= set(a["contributors"])
    assert "rank 2 on node-1" in a["explanation"]


def test_a_slowdown_that_stays_is_one_open_incident_until_the_run_ends():
    alerts = run_alerts(training_run(4, steps=1500, fault="slowdown", onset=400))
    assert [a["state"] for a in alerts if a["detector"] == "levelshift"
            or a["id"] == firing(alerts)[0]["id"]][-1] == "resolved"
    (f,) = firing(alerts)
    last = [a for a in alerts if a["id"] == f["id"]][-1]
    assert last["stats"]["resolved_because"] == "run ended"  # not "normal for N steps"


def test_related_findings_join_one_incident_and_nan_is_a_second():
    alerts = run_alerts(training_run(5, fault="lr_spike", onset=300)
                        + [Event("run", 901, 1e9 + 901, "train", {"loss": float("nan")},
                                 {"rank": "0"})])
    fired = firing(alerts)
    assert [a["detector"] for a in fired][-1] == "nonfinite" and len(fired) == 2
    first = [a for a in alerts if a["id"] == fired[0]["id"]]
    joined = {a["metric"] for a in first if a["state"] == "updated"}
    assert len(joined) >= 2, first  # loss, grad_norm, update_ratio ... joined as updates
    assert set(first[-1]["contributors"]) >= joined | {fired[0]["metric"]}
    assert first[-1]["state"] == "resolved"


def test_a_misspelt_or_invalid_parameter_is_an_error_at_load_that_names_it():
    with pytest.raises(ValueError, match="unknown parameter 'treshold'.*known: .*threshold"):
        Pipelines([("*loss*", [("zscore", {"treshold": 3})])])
    with pytest.raises(ValueError, match="parameter 'direction' must be one of 'up', 'down'"):
        Pipelines([("*loss*", [("pagehinkley", {"direction": "upward"})])])
    with pytest.raises(ValueError, match="parameter 'window' must be an integer in"):
        Pipelines([("*", [("zscore", {"window": 0})])])
    with pytest.raises(ValueError, match="run rule 'overfit': parameter 'patience'"):
        Pipelines(run_rules=[("overfit", {"patience": -1})])
    with pytest.raises(ValueError, match="unknown detector 'zscor'"):
        Pipelines([("*", [("zscore", {}), ("zscor", {})])])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_detector_keeps_the_contract(name):
    """Over the registry, not a hand-kept list: default parameters, JSON state, one 0..1
    scale, a per-value abnormal mask, and the same output however the values are batched."""
    det = REGISTRY[name]()
    assert isinstance(det, AlertSemantics) and det.resolve_after >= 0
    rng = np.random.default_rng(0)
    v = np.abs(1 + 0.1 * rng.standard_normal(400))
    v[300:] *= 3
    steps = np.arange(1, 401)
    outs = []
    for sizes in ([400], [1] * 400, [150, 7, 243]):
        state, scores, found, i = det.new_state(), [], [], 0
        for b in sizes:
            sc, fs = det.update(state, steps[i:i + b], v[i:i + b])
            scores.append(sc)
            found += [(f.index + i, round(f.score, 9)) for f in fs]
            state = load_state(dump_state(state))
            i += b
        outs.append((np.concatenate(scores), found))
    for sc, found in outs[1:]:
        np.testing.assert_allclose(sc, outs[0][0], equal_nan=True, rtol=1e-9)
        assert found == outs[0][1]
    sc = outs[0][0]
    mask = det.abnormal(v, sc)
    assert mask.shape == v.shape and mask.dtype == bool
    for s in (0.0, 0.5, 3.0, 1e9, float("inf")):
        assert 0.0 <= det.unit_score(s) <= 1.0


@pytest.mark.parametrize("name", sorted(_run_rule_registry()))
def test_every_run_rule_builds_with_its_defaults_and_state_is_json(name):
    rule = _run_rule_registry()[name]()
    events = training_run(6, steps=300, ranks=4)
    proc = RunProcessor(Config())
    proc.rules = [rule]
    state = proc.new_state("run")
    for i in range(0, len(events), 100):
        proc.process(state, events[i:i + 100])
        state = load_state(dump_state(state))
    assert name in state["rules"]


def test_a_bad_pipelines_file_stops_the_cli_at_start_with_one_line(tmp_path):
    import os
    import subprocess
    import sys

    bad = tmp_path / "pipelines.json"
    bad.write_text(json.dumps([["*loss*", [["zscore", {"treshold": 3}]]]]))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"run": "r", "step": 1, "ts": 1e9, "kind": "train",
                                  "metrics": {"loss": 1.0}}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "telltale", "detect", str(events), "--out",
                           str(tmp_path / "a.jsonl")], capture_output=True, text=True,
                          env={**os.environ, "TELLTALE_PIPELINES": str(bad)}, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown parameter 'treshold'" in proc.stderr and str(bad) in proc.stderr


@pytest.mark.parametrize("fault", ["lr_spike", "slowdown", "straggler"])
def test_records_do_not_depend_on_batching_and_keys_are_unique(fault):
    """Ranks' events of one step split across batches give the same records, and each
    (id, state, step) — the consumers' idempotency key — names one record."""
    events = training_run(7, steps=600, ranks=4, fault=fault, onset=300)
    runs = [run_alerts(events, size) for size in (len(events), 3, 7, 64)]  # splits steps
    assert runs[0] == runs[1] == runs[2] == runs[3]
    keys = [(a["id"], a["state"], a["step"]) for a in runs[0]]
    assert len(keys) == len(set(keys)) and firing(runs[0])
