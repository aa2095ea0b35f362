"""Rolling z-score of each value against the previous ``window`` finite values."""

from __future__ import annotations

from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


def rolling_mean_std(history: np.ndarray, new: np.ndarray, window: int, chunk: int = 4096):
    """Mean and population std of the ``window`` values before each entry of ``new``.

    ``history`` holds the values seen before ``new`` (finite only; all of them while fewer
    than ``window``). Causal: an entry's statistics use earlier values only, computed the
    same way whatever the batching. Returns mean, std and the count each rests on.
    """
    c = np.concatenate((history, new))
    h, k = len(history), len(new)
    end = np.arange(h, h + k)  # the window of new[j] is c[max(end - window, 0):end]
    n = np.minimum(end, window)
    mean = np.zeros(k)
    var = np.zeros(k)
    short = end < window
    if short.any():  # a growing prefix since the series began: prefix sums around c[0]
        d = c - c[0]
        s1 = np.concatenate(([0.0], np.cumsum(d)))
        s2 = np.concatenate(([0.0], np.cumsum(d * d)))
        e, cnt = end[short], np.maximum(n[short], 1)
        m = s1[e] / cnt
        mean[short] = m + c[0]
        var[short] = np.maximum(s2[e] / cnt - m * m, 0.0)
    full = np.flatnonzero(~short)
    if len(full):  # full windows: two-pass statistics over a sliding view, in chunks
        views = np.lib.stride_tricks.sliding_window_view(c, window)
        for i in range(0, len(full), chunk):
            idx = full[i:i + chunk]
            w = views[end[idx] - window]
            mean[idx] = w.mean(axis=1)
            var[idx] = w.var(axis=1)
    return mean, np.sqrt(var), n


class RollingZScore(Detector):
    """z = (x - mean) / std over the previous ``window`` finite values.

    ``direction``: "both", "up" (only rises are anomalous) or "down". The std has a
    floor of ``rel_floor`` × |mean| so a flat series does not make every wobble infinite.

    >>> det = RollingZScore(window=10, min_periods=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 3), 3.0]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(12, '3 is +17.6σ from its 10-value mean 1.04 ± 0.111')]
    """

    name = "zscore"
    parameter_constraints = {"window": constraints.POSITIVE_INT,
                             "min_periods": constraints.POSITIVE_INT,
                             "threshold": constraints.POSITIVE, "direction": constraints.DIRECTION,
                             "rel_floor": constraints.Interval(Real, 0),
                             "cooldown": constraints.NON_NEGATIVE_INT,
                             "severity": constraints.SEVERITY, "log": constraints.BOOL}
    resolve_after = 50

    def __init__(self, window: int = 100, min_periods: int = 20, threshold: float = 6.0,
                 direction: str = "both", rel_floor: float = 1e-3, cooldown: int = 50,
                 severity: str = "warning", log: bool = False):
        self.window, self.min_periods, self.threshold = window, min_periods, threshold
        self.direction, self.rel_floor, self.cooldown = direction, rel_floor, cooldown
        self.severity, self.log = severity, log
        self.score_scale = threshold / 2  # a finding at the threshold scores 2/3

    def abnormal(self, values, scores):
        """Still beyond half the threshold, in the watched direction."""
        sign = {"up": 1.0, "down": -1.0}.get(self.direction, 0.0)
        return score_over(scores, self.threshold / 2, sign)

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
        state["buf"] = np.concatenate((hist, new))[-self.window:].copy()  # array: see state.py
        return z, findings
