import json

import numpy as np
import pytest

from telltale.detectors import Divergence, NonFinite, RollingZScore
from telltale.detectors.zscore import rolling_mean_std


def run_in_batches(det, steps, values, sizes):
    state = det.new_state()
    scores, findings, i = [], [], 0
    for b in sizes:
        sc, fs = det.update(state, steps[i:i + b], values[i:i + b])
        scores.append(sc)
        findings += [(f.index + i, f.detector, f.severity, round(f.score, 9)) for f in fs]
        state = json.loads(json.dumps(state))  # explicit, serializable state
        i += b
    return np.concatenate(scores), findings


@pytest.mark.parametrize("det", [RollingZScore(window=30, min_periods=10), NonFinite(),
                                 Divergence(patience=5)])
def test_same_result_in_one_batch_or_one_value_at_a_time(det):
    rng = np.random.default_rng(1)
    v = 1 + 0.1 * rng.standard_normal(300)
    v[100] = 9.0
    v[150:153] = np.nan
    v[200:] *= np.exp(np.arange(100) / 20)
    steps = np.arange(1, 301)
    one = run_in_batches(det, steps, v, [300])
    many = run_in_batches(det, steps, v, [1] * 300)
    mixed = run_in_batches(det, steps, v, [7, 93, 1, 99, 100])
    np.testing.assert_allclose(one[0], many[0], equal_nan=True, rtol=1e-9)
    np.testing.assert_allclose(one[0], mixed[0], equal_nan=True, rtol=1e-9)
    assert one[1] == many[1] == mixed[1]


def test_rolling_mean_std_matches_numpy():
    rng = np.random.default_rng(2)
    hist = rng.normal(1e4, 3, 40)  # large offset: cancellation must not hurt
    new = rng.normal(1e4, 3, 25)
    m, s, n = rolling_mean_std(hist, new, 30)
    c = np.concatenate((hist, new))
    for j in range(25):
        w = c[40 + j - 30:40 + j]
        assert n[j] == 30
        assert m[j] == pytest.approx(w.mean(), rel=1e-12)
        assert s[j] == pytest.approx(w.std(), rel=1e-6)


def test_zscore_flags_a_spike_once_and_respects_direction():
    rng = np.random.default_rng(3)
    v = 1 + 0.05 * rng.standard_normal(200)
    v[120] = 3.0
    v[180] = -1.0
    steps = np.arange(200)
    _, up = RollingZScore(direction="up").update(RollingZScore().new_state(), steps, v)
    assert [f.index for f in up] == [120]
    assert "σ from its 100-value mean" in up[0].message
    _, both = RollingZScore().update(RollingZScore().new_state(), steps, v)
    assert [f.index for f in both] == [120, 180]


def test_nonfinite_fires_on_each_transition_into_nan():
    v = np.array([1.0, np.nan, np.nan, 2.0, np.inf, 3.0])
    _, fs = NonFinite().update(NonFinite().new_state(), np.arange(6), v)
    assert [(f.index, f.severity) for f in fs] == [(1, "critical"), (4, "critical")]


def test_divergence_fires_on_sustained_rise_not_on_a_single_spike():
    rng = np.random.default_rng(4)
    base = 2 * np.exp(-np.arange(400) / 80) + 0.2
    noisy = base * (1 + 0.05 * rng.standard_normal(400))
    spiky = noisy.copy()
    spiky[250] *= 10
    steps = np.arange(400)
    det = Divergence()
    assert det.update(det.new_state(), steps, spiky)[1] == []
    rising = noisy.copy()
    rising[250:] = noisy[250:] * np.exp(np.arange(150) / 30)
    fs = det.update(det.new_state(), steps, rising)[1]
    assert len(fs) == 1 and 250 < fs[0].index < 300
