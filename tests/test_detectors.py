import json

import numpy as np
import pytest

from telltale.detectors import Divergence, NonFinite, RollingZScore
from telltale.detectors.growth import Growth
from telltale.detectors.jump import Jump
from telltale.detectors.levelshift import LevelShift
from telltale.detectors.likelihood import LikelihoodEnsemble
from telltale.detectors.spikerate import SpikeRate
from telltale.detectors.zscore import rolling_mean_std
from tests.support.detectors import assert_batch_independent


@pytest.mark.parametrize("det", [RollingZScore(window=30, min_periods=10), NonFinite(),
                                 Divergence(patience=5), RollingZScore(log=True, threshold=4),
                                 LevelShift(reference=60, min_reference=20), Jump(factor=3),
                                 SpikeRate(factor=3, reference=50, min_reference=10),
                                 Growth(span=40, warmup=20),
                                 LikelihoodEnsemble(dims=(2, 4), history=40, learning=40, samples=9,
                                                    likelihood_history=100, reestimate=15,
                                                    rest=20, threshold=0.3)])
def test_same_result_in_one_batch_or_one_value_at_a_time(det):
    assert_batch_independent(det, rise_scale=20)


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
    assert len(fs) == 1 and 250 < fs[0].index < 320


def step_times(n=600, seed=5):
    rng = np.random.default_rng(seed)
    return 0.01 * np.exp(0.15 * rng.standard_normal(n))


def test_levelshift_catches_a_sustained_slowdown_not_a_lone_slow_step():
    t = step_times()
    t[200] = 0.2  # a garbage-collector pass
    det = LevelShift()
    assert det.update(det.new_state(), np.arange(600), t)[1] == []
    t[300:] *= 2.5
    fs = det.update(det.new_state(), np.arange(600), t)[1]
    assert len(fs) == 1 and 300 <= fs[0].index <= 315 and "2." in fs[0].message


def test_spikerate_needs_repeated_stalls():
    t = step_times()
    t[250] = 0.3
    det = SpikeRate()
    assert det.update(det.new_state(), np.arange(600), t)[1] == []
    t[[300, 330, 370, 380]] = 0.3
    fs = det.update(det.new_state(), np.arange(600), t)[1]
    assert [f.index for f in fs] == [330]  # 250, 300, 330 are within 100 steps


def test_jump_flags_a_multiplied_learning_rate_not_a_schedule():
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * np.arange(500) / 500))
    lr[:20] = np.linspace(0.001, 0.1, 20)  # warm-up
    lr[300:] *= 0.1  # step decay
    det = Jump()
    assert det.update(det.new_state(), np.arange(500), lr)[1] == []
    lr[400:410] *= 100
    fs = det.update(det.new_state(), np.arange(500), lr)[1]
    assert [f.index for f in fs] == [400] and "jumped ×98.1 in one step" in fs[0].message


def test_growth_flags_a_leak_not_a_flat_series():
    steps = np.arange(0, 1000, 10)
    rng = np.random.default_rng(6)
    rss = 310 + 0.5 * rng.random(len(steps))
    det = Growth()
    assert det.update(det.new_state(), steps, rss)[1] == []
    rss[50:] += 0.2 * (steps[50:] - steps[50])  # 0.2 MB per step from step 500
    fs = det.update(det.new_state(), steps, rss)[1]
    assert len(fs) == 1 and 500 < steps[fs[0].index] <= 700 and "leak" in fs[0].message


def test_likelihood_scores_a_spike_and_a_level_shift_above_stationary_noise():
    rng = np.random.default_rng(11)
    noise = 10 + rng.standard_normal(2500)
    spike, shift = noise.copy(), noise.copy()
    spike[2000] += 10
    shift[2000:] += 6
    det = LikelihoodEnsemble()
    steps = np.arange(2500)
    calm, _ = det.update(det.new_state(), steps, noise)
    s_spike, f_spike = det.update(det.new_state(), steps, spike)
    s_shift, _ = det.update(det.new_state(), steps, shift)
    assert np.all((calm >= 0) & (calm <= 1))
    assert (calm >= 0.5).mean() < 0.001  # one high score per ~1000 noise values at most
    before = calm[:2000].max()
    # the likelihood averages 10 raw scores: the event surfaces within 10 values
    assert s_spike[2000:2010].max() > max(before, 0.6)
    assert s_shift[2000:2010].max() > max(before, 0.55)
    assert any(2000 <= f.index < 2010 for f in f_spike)
    np.testing.assert_array_equal(s_spike[:2000], calm[:2000])  # nothing learnt from the future


def test_likelihood_state_is_plain_json_and_bounded():
    det = LikelihoodEnsemble(dims=(4, 8), history=50, likelihood_history=100, rest=30,
                             learning=20, samples=20)
    state = det.new_state()
    rng = np.random.default_rng(12)
    for chunk in range(6):
        det.update(state, np.arange(500), rng.standard_normal(500) + chunk)
        assert json.loads(json.dumps(state)) == state
    assert len(state["buf"]) == 50 + 2 * 8 - 2
    assert len(state["near"]["avgs"]) == len(state["change"]["avgs"]) == 100
    assert len(state["recent"]) == 30 and len(state["near"]["recent"]) == 10
    with pytest.raises(ValueError):
        LikelihoodEnsemble(history=5)
    v = rng.standard_normal(200)
    v[[100, 101, 150]] = [1.7e308, -1.7e308, np.inf]  # beyond float range: no crash, no NaN
    s, _ = det.update(det.new_state(), np.arange(200), v)
    assert np.isnan(s[150]) and np.all((s[:150] >= 0) & (s[:150] <= 1))
