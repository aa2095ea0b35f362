"""Repeated spikes: several values far above the running median within a span of steps.

A lone slow step (a garbage-collector pass) is normal; three within 100 steps are a
pattern (data-loader stalls).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


class SpikeRate(Detector):
    """Finding when ``count`` values above ``factor`` × the median of the previous
    ``reference`` values fall within ``span`` steps; then quiet for ``span`` steps.

    >>> det = SpikeRate(count=2, span=10, reference=10, min_reference=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 3), 9.0, 1.0, 9.0]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(14, '2 values above 8× the median 1.05 within 10 steps (latest 9): repeated stalls')]
    """

    name = "spikerate"
    parameter_constraints = {"factor": constraints.Interval(Real, 1, None, "neither"),
                             "count": constraints.POSITIVE_INT, "span": constraints.POSITIVE_INT,
                             "reference": constraints.POSITIVE_INT,
                             "min_reference": constraints.POSITIVE_INT,
                             "severity": constraints.SEVERITY}
    resolve_after = 100

    def __init__(self, factor: float = 8.0, count: int = 3, span: int = 100,
                 reference: int = 200, min_reference: int = 50, severity: str = "warning"):
        self.factor, self.count, self.span = factor, count, span
        self.reference, self.min_reference, self.severity = reference, min_reference, severity
        self.score_scale = factor / 2

    def abnormal(self, values, scores):
        return score_over(scores, self.factor, 1.0)

    def new_state(self) -> dict:
        return {"buf": [], "spikes": [], "quiet_until": None}

    def update(self, state, steps, values):
        buf, spikes = state["buf"], state["spikes"]
        srt = sorted(buf)  # the reference kept sorted for the medians (derived, not state)
        quiet = state["quiet_until"]
        scores = np.full(len(values), np.nan)
        findings = []
        for i, (s, x) in enumerate(zip(steps.tolist(), values.tolist(), strict=True)):
            if not (x > 0 and math.isfinite(x)):
                continue
            n = len(srt)
            if n >= self.min_reference:
                h = n // 2
                med = srt[h] if n % 2 else (srt[h - 1] + srt[h]) / 2
                scores[i] = x / med
                if x > self.factor * med:
                    spikes.append(s)
                    while spikes and spikes[0] <= s - self.span:
                        spikes.pop(0)
                    if len(spikes) >= self.count and (quiet is None or s > quiet):
                        quiet = s + self.span
                        findings.append(Finding(
                            i, self.name, self.severity, x / med,
                            f"{len(spikes)} values above {self.factor:g}× the median "
                            f"{med:.4g} within {self.span} steps (latest {x:.4g}): "
                            f"repeated stalls", {"median": med, "spike_steps": list(spikes)}))
                    continue  # spikes stay out of the reference
            buf.append(x)
            insort(srt, x)
            if len(buf) > self.reference:
                del srt[bisect_left(srt, buf.pop(0))]
        state["quiet_until"] = quiet
        return scores, findings
