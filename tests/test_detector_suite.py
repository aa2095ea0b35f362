"""The statistical, ML, inference and run-level detectors: contract and behaviour."""

import json

import numpy as np
import pytest

from telltale.config import Config
from telltale.detectors import REGISTRY
from telltale.detectors.inference import (
    Drift,
    ErrorBurst,
    QuantileRegression,
    SLOBreach,
    ks_statistic,
    psi,
)
from telltale.detectors.ml import (
    IsolationForestDetector,
    KNNDistance,
    MultivariateKNN,
    OneClassSVMDetector,
    calibrate,
)
from telltale.detectors.runrules import Overfit, Straggler
from telltale.detectors.state import dump_state, load_state
from telltale.detectors.stats import EWMAZ, PageHinkley, RobustZ
from telltale.detectors.training import Plateau, Range
from telltale.schema import Event
from telltale.streams.processor import RunProcessor
from tests.support.detectors import assert_batch_independent

SMALL = [RobustZ(window=50, min_periods=10), EWMAZ(min_periods=10), PageHinkley(warmup=20),
         Plateau(patience=50, warmup=10), Range(low=0.5, high=5, warmup=5),
         SLOBreach(slo=3.0, window=50, min_values=20, every=10),
         QuantileRegression(recent=30, reference=60, min_reference=30, every=10),
         ErrorBurst(recent=20, reference=100, every=5),
         Drift(recent=40, reference_size=60, every=20),
         Drift(recent=40, reference_size=60, every=20, reference="sliding"),
         KNNDistance(shingle=4, reference=60, refit_every=25, min_reference=20),
         OneClassSVMDetector(shingle=4, reference=60, refit_every=25, min_reference=20),
         IsolationForestDetector(shingle=4, reference=60, refit_every=25, min_reference=20,
                                 trees=16, threshold=0.99)]


@pytest.mark.parametrize("det", SMALL, ids=lambda d: d.name)
def test_same_result_however_batched_and_state_is_json(det):
    found = assert_batch_independent(det, rise_scale=40)
    if det.name != "errorburst":  # (its input is a 0/1 error indicator: tested below)
        assert found, f"{det.name} found nothing in a series with a spike and a rise"


def test_every_registered_detector_is_tested_here_or_in_test_detectors():
    here = {d.name for d in SMALL}
    older = {"zscore", "nonfinite", "divergence", "levelshift", "jump", "spikerate", "growth",
             "likelihood"}
    assert set(REGISTRY) <= here | older


def noise(n=400, seed=0):
    return 1 + 0.05 * np.random.default_rng(seed).standard_normal(n)


@pytest.mark.parametrize("det", [RobustZ(), EWMAZ(), KNNDistance(), OneClassSVMDetector()],
                         ids=lambda d: d.name)
def test_a_spike_is_found_and_stationary_noise_is_quiet(det):
    _, quiet = det.update(det.new_state(), np.arange(3000), noise(3000, 1))
    assert quiet == []
    v = noise(600)
    v[500] = 3.0
    _, fs = det.update(det.new_state(), np.arange(600), v)
    assert [f.index for f in fs] == [500]


@pytest.mark.parametrize("det", [KNNDistance(), OneClassSVMDetector(),
                                 IsolationForestDetector()], ids=lambda d: d.name)
def test_ml_detectors_find_a_level_shift(det):
    # (Isolation Forest splits one feature at a time: a single spike in an 8-value shingle
    # is not isolated fast enough to stand out; a shift of the whole window is.)
    v = noise(600)
    v[500:] += 0.5
    _, fs = det.update(det.new_state(), np.arange(600), v)
    assert fs and 500 <= fs[0].index < 508


def test_page_hinkley_finds_a_level_shift_quickly_and_not_noise():
    v = noise(600)
    det = PageHinkley()
    assert det.update(det.new_state(), np.arange(600), v)[1] == []
    v[400:] += 0.1  # a 2σ shift
    fs = det.update(det.new_state(), np.arange(600), v)[1]
    assert fs and 400 <= fs[0].index < 440 and "up" in fs[0].message


def test_calibrated_scores_are_in_unit_interval_and_monotone():
    calib = np.sort(np.random.default_rng(0).exponential(size=200))
    raw = np.linspace(-1, 20, 200)
    u = calibrate(raw, calib)
    assert (u > 0).all() and (u < 1).all() and (np.diff(u) >= 0).all()
    assert u[-1] > 0.9999


def test_ml_state_restores_to_the_same_scores():
    det = KNNDistance(reference=100, refit_every=40, min_reference=30)
    v = noise(300, 3)
    st = det.new_state()
    det.update(st, np.arange(150), v[:150])
    restored = load_state(dump_state(st))
    from telltale.detectors import ml

    ml._MODELS.clear()  # a restarted worker has no fitted models
    a, _ = det.update(st, np.arange(150, 300), v[150:])
    b, _ = det.update(restored, np.arange(150, 300), v[150:])
    np.testing.assert_array_equal(a, b)


def test_slo_breach_and_p99_regression():
    lat = 20 + 2 * np.random.default_rng(5).standard_normal(2000)
    lat[1500:] *= 2
    slo = SLOBreach(slo=35)
    fs = slo.update(slo.new_state(), np.arange(2000), lat)[1]
    assert len(fs) == 1 and 1500 <= fs[0].index < 1600
    p99 = QuantileRegression()
    fs = p99.update(p99.new_state(), np.arange(2000), lat)[1]
    assert len(fs) == 1 and 1500 <= fs[0].index < 1600 and "p99" in fs[0].message


def test_error_burst():
    rng = np.random.default_rng(6)
    err = (rng.random(3000) < 0.01).astype(float)
    det = ErrorBurst()
    assert det.update(det.new_state(), np.arange(3000), err)[1] == []
    err[2500:2540] = 1.0
    fs = det.update(det.new_state(), np.arange(3000), err)[1]
    assert len(fs) == 1 and 2500 <= fs[0].index < 2540


def test_drift_psi_and_ks():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 2000), rng.normal(0, 1, 2000)
    assert psi(a, b) < 0.05 and ks_statistic(a, b) < 0.06
    assert psi(a, b + 1) > 0.25 and ks_statistic(a, b + 1) > 0.3
    pred = np.concatenate((rng.normal(0.3, 0.1, 3000), rng.normal(0.5, 0.1, 1000)))
    det = Drift()
    fs = det.update(det.new_state(), np.arange(4000), pred)[1]
    assert len(fs) == 1 and 3000 <= fs[0].index < 3300 and "PSI" in fs[0].message
    quiet = rng.normal(0.3, 0.1, 4000)
    assert det.update(det.new_state(), np.arange(4000), quiet)[1] == []


def test_plateau_only_when_never_learning():
    rng = np.random.default_rng(8)
    stuck = 2.3 + 0.05 * rng.standard_normal(800)
    det = Plateau()
    assert len(det.update(det.new_state(), np.arange(800), stuck)[1]) == 1
    learning = 2.3 * np.exp(-np.arange(800) / 200) + 0.05 * rng.standard_normal(800)
    assert det.update(det.new_state(), np.arange(800), learning)[1] == []


# -- run-level rules through the processor ------------------------------------------------


def overfit_events(n=600, eval_every=10):
    rng = np.random.default_rng(9)
    evs = []
    for s in range(1, n + 1):
        train = 2.0 * np.exp(-s / 60) + 0.01 * rng.random()
        evs.append(Event("r", s, float(s), "train", {"loss": float(train)}))
        if s % eval_every == 0:
            val = 1.0 + 0.6 * np.exp(-s / 40) + (0.004 * (s - 200) if s > 200 else 0)
            evs.append(Event("r", s, float(s), "eval", {"val_loss": float(val)}))
    return evs


def straggler_events(n=300, ranks=4, slow=2, onset=150):
    rng = np.random.default_rng(10)
    evs = []
    for s in range(1, n + 1):
        for r in rng.permutation(ranks):
            t = 0.01 * np.exp(0.1 * rng.standard_normal()) * (2.2 if r == slow and s >= onset
                                                               else 1)
            evs.append(Event("r", s, float(s), "train", {"step_time_s": float(t)},
                             {"rank": str(r)}))
    return evs


def run_proc(proc, events, size):
    state, alerts = proc.new_state("r"), []
    for i in range(0, len(events), size):
        alerts += proc.process(state, events[i:i + size]).alerts
        state = load_state(dump_state(state))
    return alerts


@pytest.mark.parametrize("make,rule", [(overfit_events, Overfit()),
                                       (straggler_events, Straggler())])
def test_run_rules_are_batch_independent(make, rule):
    proc = RunProcessor(Config())
    proc.rules = [rule]
    evs = make()
    runs = [[(a["metric"], a["rank"], a["step"], a["detector"], a["message"])
             for a in run_proc(proc, evs, size)
             if a["detector"] == rule.name and a["state"] == "firing"]
            for size in (len(evs), 1, 37)]
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 1


def test_overfit_names_train_and_val_and_its_onset():
    proc = RunProcessor(Config())
    (a,) = [a for a in run_proc(proc, overfit_events(), 100)
            if a["detector"] == "overfit" and a["state"] == "firing"]
    assert a["metric"] == "val_loss" and 200 < a["step"] <= 300
    assert "training loss fell" in a["message"]


def test_straggler_points_at_the_slow_rank():
    proc = RunProcessor(Config())
    al = [a for a in run_proc(proc, straggler_events(), 64) if a["detector"] == "straggler"]
    # one incident on the slow rank, open while it stays slow (closed when the run ends)
    assert [(a["rank"], a["metric"], a["state"]) for a in al] == [("2", "step_time_s", "firing")]
    assert 150 <= al[0]["step"] < 160


def test_multivariate_knn_names_the_metrics_that_moved():
    rng = np.random.default_rng(11)
    evs = []
    for s in range(1, 501):
        m = {"loss": 1 + 0.05 * rng.standard_normal(), "grad_norm": 2 + 0.1 * rng.standard_normal(),
             "param_norm": 10 + 0.1 * rng.standard_normal(), "acc": 0.5 + 0.02 * rng.random()}
        if s == 400:
            m["grad_norm"] = 9.0
        evs.append(Event("r", s, float(s), "train", m))
    proc = RunProcessor(Config())
    proc.rules = [MultivariateKNN()]
    # the finding joins the incident that grad_norm's own z-score opens at the same step
    al = [a for a in run_proc(proc, evs, 50)
          if a["detector"] == "mvknn" and a["state"] in ("firing", "updated")]
    assert [a["step"] for a in al] == [400]
    assert al[0]["metric"] == "grad_norm" and "grad_norm" in al[0]["message"]


def test_a_pipelines_file_can_replace_run_rules(tmp_path):
    from telltale.detectors.pipelines import Pipelines

    p = tmp_path / "pipes.json"
    p.write_text(json.dumps({"metrics": [["*", [["nonfinite", {}]]]],
                             "run_rules": [["mvknn", {"threshold": 0.999}]]}))
    pipes = Pipelines.from_file(str(p))
    assert [r.name for r in pipes.run_rules()] == ["mvknn"]
    assert [d.name for d in pipes.for_metric("loss")] == ["nonfinite"]
    p.write_text(json.dumps({"run_rules": [["nope", {}]]}))
    with pytest.raises(ValueError, match="unknown run rule"):
        Pipelines.from_file(str(p))
