"""Strictly online anomaly scores in 0..1 for a univariate series (``telltale score``).

Each row's score uses only earlier rows: detectors score a value before learning it. The
default is the ``likelihood`` detector (detectors/likelihood.py); ``zscore`` is the rolling
z-score it replaced, kept for comparison.
"""

from __future__ import annotations

import csv
import math

import numpy as np

from telltale.detectors import LikelihoodEnsemble, RollingZScore

_SQRT2 = math.sqrt(2.0)
DETECTORS = ("likelihood", "zscore")
DEFAULT_DETECTOR = "likelihood"


_erf = np.vectorize(math.erf, otypes=[float])


def z_to_unit(z: np.ndarray) -> np.ndarray:
    """|z| -> probability mass of a normal within ±|z| (0 at the mean, → 1 far out)."""
    z = np.nan_to_num(np.abs(np.asarray(z, float)), nan=0.0)
    return _erf(z / _SQRT2) if len(z) else z


def zscore_values(values: np.ndarray, window: int = 400) -> np.ndarray:
    """Rolling z-score of the values over ``window``, calibrated to 0..1."""
    det = RollingZScore(window=window, min_periods=20, threshold=math.inf)
    z, _ = det.update(det.new_state(), np.arange(len(values)), np.asarray(values, float))
    return z_to_unit(z)


def score_values(values: np.ndarray, detector: str = DEFAULT_DETECTOR) -> np.ndarray:
    """Scores in 0..1 of a series with one of ``DETECTORS``; 0 where a value is not finite."""
    values = np.asarray(values, float)
    if detector == "zscore":
        return zscore_values(values)
    if detector != "likelihood":
        raise ValueError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    det = LikelihoodEnsemble()
    scores, _ = det.update(det.new_state(), np.arange(len(values)), values)
    return np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)


def read_series(path: str) -> tuple[list[list[str]], np.ndarray]:
    """Rows of a ``timestamp,value`` CSV and their values (NaN where a value is empty)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty file; expected a header timestamp,value")
    header, body = rows[0], [r for r in rows[1:] if r]
    if [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
        raise ValueError(f"{path}: expected columns timestamp,value, got {header}")
    values = np.empty(len(body))
    for i, r in enumerate(body):
        text = r[1].strip() if len(r) > 1 else ""
        try:
            values[i] = float(text) if text else np.nan
        except ValueError:
            raise ValueError(f"{path}: data row {i + 1}: value {text!r} is not a number") from None
    return body, values


def score_csv(path: str, out_path: str, detector: str = DEFAULT_DETECTOR) -> int:
    """Read ``timestamp,value`` rows, write ``timestamp,value,anomaly_score``; returns rows."""
    body, values = read_series(path)
    scores = score_values(values, detector)
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for r, s in zip(body, scores.tolist(), strict=True):
            w.writerow([r[0], r[1] if len(r) > 1 else "", f"{s:.6f}"])
    return len(body)
