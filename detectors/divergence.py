"""Divergence: a loss-like series whose smoothed level rises well above its best and stays."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


class Divergence(Detector):
    """EWMA level more than ``ratio`` × its best level for ``patience`` values in a row.

    The best level is the minimum of a slower EWMA (``alpha`` × ``best_slowdown``), so a
    lucky dip of a noisy loss does not become the reference. The rise is measured against
    the best level, but never against less than ``floor_frac`` × the level the series
    started from: a loss that fell from 2.3 to 0.01 and wobbles to 0.03 has not diverged.
    Re-arms once the level falls back below the halfway mark. Non-finite values are left to
    :class:`NonFinite`.

    >>> det = Divergence(alpha=0.5, best_slowdown=1.0, patience=2, min_periods=3)
    >>> values = np.r_[np.linspace(2, 0.5, 10), [1.0, 2.0, 3.0, 4.0]]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(12, 'smoothed level 2.20829 has stayed above 2× its best 0.666341 for 2 values: diverging')]
    """

    name = "divergence"
    parameter_constraints = {"alpha": constraints.UNIT,
                             "ratio": constraints.Interval(Real, 1, None, "neither"),
                             "patience": constraints.POSITIVE_INT,
                             "min_periods": constraints.POSITIVE_INT,
                             "best_slowdown": constraints.Interval(Real, 0, 1, "right"),
                             "floor_frac": constraints.Interval(Real, 0, 1),
                             "severity": constraints.SEVERITY}
    resolve_after = 50

    def __init__(self, alpha: float = 0.1, ratio: float = 2.0, patience: int = 10,
                 min_periods: int = 20, best_slowdown: float = 0.2, floor_frac: float = 0.05,
                 severity: str = "critical"):
        self.alpha, self.ratio, self.patience = alpha, ratio, patience
        self.slow_alpha = alpha * best_slowdown
        self.min_periods, self.severity = min_periods, severity
        self.floor_frac = floor_frac
        self.score_scale = (ratio - 1) / 2

    def abnormal(self, values, scores):
        """Above the re-arm mark: half-way between the best level and ``ratio`` × it."""
        return score_over(scores, (self.ratio - 1) / 2, 1.0)

    def new_state(self) -> dict:
        return {"level": None, "slow": None, "best": None, "start": None, "n": 0,
                "above": 0, "active": False}

    def update(self, state, steps, values):
        a = self.alpha
        scores = np.full(len(values), np.nan)
        findings = []
        level, slow, best, n = state["level"], state.get("slow"), state["best"], state["n"]
        sa = self.slow_alpha
        above, active = state["above"], state["active"]
        start = state.get("start")
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            level = x if level is None else level + a * (x - level)
            slow = x if slow is None else slow + sa * (x - slow)
            n += 1
            if n < self.min_periods:
                continue
            best = slow if best is None else min(best, slow)
            start = abs(level) if start is None else start
            scale = max(abs(best), self.floor_frac * start) + 1e-12
            excess = (level - best) / scale
            scores[i] = excess
            if excess > self.ratio - 1:
                above += 1
                if above >= self.patience and not active:
                    active = True
                    findings.append(Finding(
                        i, self.name, self.severity, float(excess),
                        f"smoothed level {level:.6g} has stayed above {self.ratio:g}× its "
                        f"best {best:.6g} for {above} values: diverging",
                        {"level": level, "best": best}))
            else:
                above = 0
                if active and excess < (self.ratio - 1) / 2:
                    active = False
        state.update(level=level, slow=slow, best=best, start=start, n=n, above=above,
                     active=active)
        return scores, findings
