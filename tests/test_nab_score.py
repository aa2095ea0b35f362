"""bench/nab_score.py: NAB scoring on hand-built series and on the real nab-dev corpus."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NAB_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-dev"

_spec = importlib.util.spec_from_file_location("nab_score", ROOT / "bench" / "nab_score.py")
nab = importlib.util.module_from_spec(_spec)
sys.modules["nab_score"] = nab
_spec.loader.exec_module(nab)

STANDARD = nab.PROFILES["standard"]
T0 = np.datetime64("2020-01-01T00:00:00", "s")


def tiny(window_rows=(8, 11), n=25) -> nab.Series:
    """n rows at 5-minute steps, one window given as row indices (probation: 3 rows)."""
    ts = T0 + np.arange(n) * np.timedelta64(300, "s")
    a, b = window_rows
    return nab.make_series("tiny.csv", ts, np.zeros(n), [(str(ts[a]), str(ts[b]))])


def flags(n: int, rows) -> np.ndarray:
    out = np.zeros(n)
    out[list(rows)] = 1.0
    return out


def raw(series, rows, weights=STANDARD) -> dict:
    return nab.score_series(series, flags(series.values.size, rows), 0.5, weights)


@pytest.fixture(scope="module")
def corpus():
    assert NAB_DEV.is_dir(), f"NAB dev data missing: {NAB_DEV}"
    return nab.load_corpus(NAB_DEV)


def test_scaled_sigmoid_matches_nab_docstring():
    s = nab.scaled_sigmoid
    assert s(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert s(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert s(0.0) == 0.0
    assert s(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert s(3.0) == pytest.approx(-1.0, abs=1e-6) and s(3.01) == -1.0


def test_probation_length_formula():
    assert tiny().probation == 3  # floor(0.15 * 25)
    assert [nab.probation_length(n) for n in (1882, 4032, 5315, 22695)] == [282, 604, 750, 750]


def test_hand_built_series_exact_raw_score():
    series = tiny()  # window rows 8..11, width 4
    assert series.windows == [(8, 11)]
    # row 1: probationary (ignored); row 5: FP before any window; row 9: TP; row 10: second
    # detection in the window (ignored); row 13: FP 2 rows after the window; row 22: FP far away
    got = raw(series, [1, 5, 9, 10, 13, 22])
    tp = math.tanh(2.5 * 3 / 4) / math.tanh(2.5)  # S(-(11 - 9 + 1) / 4) / S(-1)
    assert tp == pytest.approx(0.9669890878)
    fp_near = -0.11 * math.tanh(2.5 * 2 / 3)  # S((13 - 11) / (4 - 1)) * fpWeight
    assert fp_near == pytest.approx(-0.11 * 0.9311096087)
    expected = tp + fp_near - 0.11 - 0.11  # row 22: (22 - 11) / 3 > 3 -> -1; row 5: no window yet
    assert got == {"raw": pytest.approx(expected, abs=1e-12), "tp": 1, "fn": 0, "fp": 3}
    assert expected == pytest.approx(0.6445670308)

    # The sweep over the same flags picks threshold 1.0 and normalises against null = -1.
    res = nab.score_corpus([series], {"tiny.csv": flags(25, [1, 5, 9, 10, 13, 22])})
    std = res["standard"]
    assert std["threshold"] == 1.0 and std["raw"] == pytest.approx(expected, abs=1e-12)
    assert std["score"] == pytest.approx(100 * (expected + 1) / 2)
    low_fn = res["reward_low_FN_rate"]
    assert low_fn["raw"] == pytest.approx(expected, abs=1e-12) and low_fn["null"] == -2.0


def test_probationary_detections_are_ignored():
    series = tiny()
    assert raw(series, [0, 1, 2]) == {"raw": -1.0, "tp": 0, "fn": 1, "fp": 0}
    assert raw(series, [3])["raw"] == pytest.approx(-1.11)  # first scored row
    # A window reaching into the probationary period: its probationary rows never count, and
    # later detections earn credit relative to the whole window (rows 1..6, width 6).
    early = tiny(window_rows=(1, 6))
    assert raw(early, [1, 2])["raw"] == -1.0
    credit = math.tanh(2.5 * 4 / 6) / math.tanh(2.5)  # row 3: S(-(6 - 3 + 1) / 6) / S(-1)
    assert raw(early, [1, 2, 3])["raw"] == pytest.approx(credit)


def test_only_first_detection_in_a_window_counts():
    series = tiny()
    first = raw(series, [9])["raw"]
    assert raw(series, [9, 10, 11])["raw"] == first
    assert raw(series, [10])["raw"] < first
    assert raw(series, [8, 9, 10, 11]) == {"raw": pytest.approx(1.0), "tp": 1, "fn": 0, "fp": 0}
    assert raw(series, [11])["raw"] == pytest.approx(math.tanh(2.5 / 4) / math.tanh(2.5))


def test_perfect_is_100_and_null_is_0_on_nab_dev(corpus):
    assert len(corpus) == 13 and sum(len(s.windows) for s in corpus) == 25
    perfect = nab.score_corpus(corpus, {s.name: nab.perfect_scores(s) for s in corpus})
    null = nab.score_corpus(corpus, {s.name: nab.null_scores(s) for s in corpus})
    for profile in nab.PROFILES:
        assert perfect[profile]["score"] == pytest.approx(100.0)
        assert (perfect[profile]["tp"], perfect[profile]["fp"]) == (25, 0)
        assert null[profile]["score"] == 0.0 and null[profile]["fn"] == 25


def test_sweep_agrees_with_fixed_threshold_scoring(corpus):
    scores = {s.name: nab.zscore_scores(s.values) for s in corpus}
    allscores = np.concatenate(list(scores.values()))
    for profile, weights in nab.PROFILES.items():
        best = nab.score_corpus(corpus, scores, {profile: weights})[profile]

        def total(t, weights=weights):
            return sum(nab.score_series(s, scores[s.name], t, weights)["raw"] for s in corpus)

        assert total(best["threshold"]) == pytest.approx(best["raw"], abs=1e-9)
        for t in np.quantile(allscores, np.linspace(0.5, 1.0, 11)):
            assert total(t) <= best["raw"] + 1e-9


def test_cli_reads_score_files(corpus, tmp_path, capsys):
    for s in corpus:
        path = tmp_path / s.name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"{t.astype(object):%Y-%m-%d %H:%M:%S},{v},{a}"
                for t, v, a in zip(s.timestamps, s.values, nab.perfect_scores(s), strict=True)]
        path.write_text("timestamp,value,anomaly_score\n" + "\n".join(rows) + "\n")
    assert nab.main(["--nab", str(NAB_DEV), "--scores", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("100.00") == 3
