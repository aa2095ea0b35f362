"""Sudden multiplicative jump from one value to the next (e.g. a learning rate ×100)."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


class Jump(Detector):
    """Finding when x_t / x_(t-1) > ``factor`` (both positive and finite).

    >>> det = Jump(factor=3)
    >>> values = np.array([1.0, 1.1, 5.0, 5.2])
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(2, 'jumped ×4.55 in one step (1.1 → 5)')]
    """

    name = "jump"
    parameter_constraints = {"factor": constraints.Interval(Real, 1, None, "neither"),
                             "severity": constraints.SEVERITY}
    resolve_after = 20

    def __init__(self, factor: float = 10.0, severity: str = "critical"):
        self.factor, self.severity = factor, severity
        self.score_scale = factor / 2

    def abnormal(self, values, scores):
        return score_over(scores, self.factor, 1.0)

    def new_state(self) -> dict:
        return {"prev": None}

    def update(self, state, steps, values):
        prev = state["prev"]
        scores = np.full(len(values), np.nan)
        findings = []
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            if prev is not None and prev > 0 and x > 0:
                r = x / prev
                scores[i] = r
                if r > self.factor:
                    findings.append(Finding(i, self.name, self.severity, r,
                                            f"jumped ×{r:.3g} in one step ({prev:.4g} → {x:.4g})",
                                            {"previous": prev}))
            prev = x
        state["prev"] = prev
        return scores, findings
