"""Steady growth (a memory leak): the series rose by a fraction of its level over a span
of steps, and most of its steps were up."""

from __future__ import annotations

import math

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


class Growth(Detector):
    """Finding when, over the last ``span`` steps (at least ``min_points`` values),
    the value rose by more than ``rel`` of its level with ≥ ``up_fraction`` rising steps.

    >>> det = Growth(span=10, min_points=5, warmup=0)
    >>> values = 1 + 0.01 * np.arange(20)
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(10, 'grew 10.0% over the last 10 steps (1 → 1.1, 0.01 per step): leak?')]
    """

    name = "growth"
    parameter_constraints = {"span": constraints.POSITIVE_INT,
                             "min_points": constraints.POSITIVE_INT, "rel": constraints.POSITIVE,
                             "up_fraction": constraints.UNIT,
                             "warmup": constraints.NON_NEGATIVE_INT,
                             "severity": constraints.SEVERITY}
    resolve_after = 150

    def __init__(self, span: int = 150, min_points: int = 6, rel: float = 0.03,
                 up_fraction: float = 0.75, warmup: int = 100, severity: str = "warning"):
        self.span, self.min_points, self.rel = span, min_points, rel
        self.up_fraction, self.warmup, self.severity = up_fraction, warmup, severity
        self.score_scale = rel / 2

    def abnormal(self, values, scores):
        return score_over(scores, self.rel / 3, 1.0)

    def new_state(self) -> dict:
        return {"pts": [], "first": None, "active": False}

    def update(self, state, steps, values):
        pts, active, first = state["pts"], state["active"], state["first"]
        scores = np.full(len(values), np.nan)
        findings = []
        for i, (s, x) in enumerate(zip(steps.tolist(), values.tolist(), strict=True)):
            if not math.isfinite(x):
                continue
            first = s if first is None else first
            pts.append([s, x])
            while pts and pts[0][0] < s - self.span:
                pts.pop(0)
            if len(pts) < self.min_points or s - first < self.warmup + self.span:
                continue
            v = np.array([p[1] for p in pts])
            rise = (v[-1] - v[0]) / max(abs(v[0]), 1e-12)
            up = float(np.mean(np.diff(v) > 0))
            scores[i] = rise
            if not active and rise > self.rel and up >= self.up_fraction:
                active = True
                per_step = (v[-1] - v[0]) / max(s - pts[0][0], 1)
                findings.append(Finding(
                    i, self.name, self.severity, rise,
                    f"grew {rise:.1%} over the last {s - pts[0][0]} steps "
                    f"({v[0]:.4g} → {v[-1]:.4g}, {per_step:.3g} per step): leak?",
                    {"per_step": per_step}))
            elif active and rise < self.rel / 3:
                active = False
        state.update(first=first, active=active)
        return scores, findings
