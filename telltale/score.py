"""Strictly online anomaly scores in 0..1 for a univariate series (``telltale score``).

Each row's score uses only earlier rows: detectors score a value before learning it.
"""

from __future__ import annotations

import csv
import math

import numpy as np

from telltale.detectors import RollingZScore

_SQRT2 = math.sqrt(2.0)


_erf = np.vectorize(math.erf, otypes=[float])


def z_to_unit(z: np.ndarray) -> np.ndarray:
    """|z| -> probability mass of a normal within ±|z| (0 at the mean, → 1 far out)."""
    z = np.nan_to_num(np.abs(np.asarray(z, float)), nan=0.0)
    return _erf(z / _SQRT2) if len(z) else z


def score_values(values: np.ndarray, window: int = 400) -> np.ndarray:
    """Default univariate scores: rolling z-score of the values, calibrated to 0..1."""
    det = RollingZScore(window=window, min_periods=20, threshold=math.inf)
    z, _ = det.update(det.new_state(), np.arange(len(values)), np.asarray(values, float))
    return z_to_unit(z)


def score_csv(path: str, out_path: str) -> int:
    """Read ``timestamp,value`` rows, write ``timestamp,value,anomaly_score``; returns rows."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    if [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
        raise ValueError(f"{path}: expected columns timestamp,value, got {header}")
    values = np.array([float(r[1]) if r[1].strip() else np.nan for r in body])
    scores = score_values(values)
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for r, s in zip(body, scores.tolist(), strict=True):
            w.writerow([r[0], r[1], f"{s:.6f}"])
    return len(body)
