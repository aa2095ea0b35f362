"""NaN / Inf: the value itself is broken. Fires once per run of non-finite values."""

from __future__ import annotations

import numpy as np

from telltale.detectors.base import Detector, Finding


class NonFinite(Detector):
    """Critical finding on the first NaN/Inf after a finite value (or at the start).

    >>> det = NonFinite()
    >>> values = np.array([1.0, np.nan, np.inf, 2.0, np.nan])
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(1, 'value is nan at step 2'), (4, 'value is nan at step 5')]
    """

    name = "nonfinite"
    resolve_after = 20

    def unit_score(self, score: float) -> float:
        return 1.0

    def abnormal(self, values, scores):
        return ~np.isfinite(values)

    def new_state(self) -> dict:
        return {"bad": False}

    def update(self, state, steps, values):
        bad = ~np.isfinite(values)
        scores = bad.astype(float)
        findings = []
        prev = state["bad"]
        if bad.any():
            # transitions finite -> non-finite
            before = np.concatenate(([prev], bad[:-1]))
            for i in np.flatnonzero(bad & ~before):
                v = values[i]
                findings.append(Finding(int(i), self.name, "critical", 1.0,
                                        f"value is {v} at step {int(steps[i])}"))
        state["bad"] = bool(bad[-1]) if len(bad) else prev
        return scores, findings
