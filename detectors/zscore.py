"""Rolling z-score of each value against the previous ``window`` finite values."""

from __future__ import annotations

import numpy as np

from telltale.detectors.base import Detector, Finding


def rolling_mean_std(history: np.ndarray, new: np.ndarray, window: int):
    """Mean and population std of the ``window`` values before each entry of ``new``.

    ``history`` holds the values seen before ``new`` (finite only). Returns arrays of
    len(new) plus the number of values each statistic rests on.
    """
    c = np.concatenate((history, new))
    h = len(history)
    ref = np.median(c) if len(c) else 0.0  # centre to keep the sums well conditioned
    d = c - ref
    s1 = np.concatenate(([0.0], np.cumsum(d)))
    s2 = np.concatenate(([0.0], np.cumsum(d * d)))
    end = np.arange(h, h + len(new))  # window is c[start:end]
    start = np.maximum(end - window, 0)
    n = end - start
    safe = np.maximum(n, 1)
    m = (s1[end] - s1[start]) / safe
    var = np.maximum((s2[end] - s2[start]) / safe - m * m, 0.0)
    return m + ref, np.sqrt(var), n


class RollingZScore(Detector):
    """z = (x - mean) / std over the previous ``window`` finite values.

    ``direction``: "both", "up" (only rises are anomalous) or "down". The std has a
    floor of ``rel_floor`` × |mean| so a flat series does not make every wobble infinite.
    """

    name = "zscore"

    def __init__(self, window: int = 100, min_periods: int = 20, threshold: float = 6.0,
                 direction: str = "both", rel_floor: float = 1e-3, cooldown: int = 50,
                 severity: str = "warning", log: bool = False):
        self.window, self.min_periods, self.threshold = window, min_periods, threshold
        self.direction, self.rel_floor, self.cooldown = direction, rel_floor, cooldown
        self.severity, self.log = severity, log

    def new_state(self) -> dict:
        return {"buf": [], "last_alert": None}

    def update(self, state, steps, values):
        raw = values
        if self.log:  # scale-free: z of log(x); non-positive values are ignored
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(values > 0, np.log(values), np.nan)
        fin = np.isfinite(values)
        new = values[fin]
        hist = np.asarray(state["buf"], dtype=float)
        mean, std, n = rolling_mean_std(hist, new, self.window)
        std = np.maximum(std, self.rel_floor * np.abs(mean) + 1e-12)
        z_fin = (new - mean) / std
        z_fin[n < self.min_periods] = np.nan
        z = np.full(len(values), np.nan)
        z[fin] = z_fin
        if self.direction == "up":
            hit = z_fin >= self.threshold
        elif self.direction == "down":
            hit = z_fin <= -self.threshold
        else:
            hit = np.abs(z_fin) >= self.threshold
        findings = []
        if hit.any():
            idx_fin = np.flatnonzero(fin)
            last = state["last_alert"]
            for j in np.flatnonzero(hit):
                step = int(steps[idx_fin[j]])
                if last is not None and step - last <= self.cooldown:
                    continue
                last = step
                i = int(idx_fin[j])
                if self.log:
                    what = (f"{raw[i]:.6g} is {z_fin[j]:+.1f}σ (log scale) from its "
                            f"{int(n[j])}-value geometric mean {np.exp(mean[j]):.6g}")
                else:
                    what = (f"{new[j]:.6g} is {z_fin[j]:+.1f}σ from its {int(n[j])}-value mean "
                            f"{mean[j]:.6g} ± {std[j]:.3g}")
                findings.append(Finding(i, self.name, self.severity, float(z_fin[j]), what,
                                        {"mean": float(mean[j]), "std": float(std[j]),
                                         "n": int(n[j])}))
            state["last_alert"] = last
        state["buf"] = np.concatenate((hist, new))[-self.window:].tolist()
        return z, findings
