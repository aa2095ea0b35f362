"""Level shift on a log scale: the recent median moved by a factor from the reference median.

For heavy-tailed positive series (step time, throughput): one slow step moves neither
median, a sustained 2× slowdown moves the recent one.
"""

from __future__ import annotations

import math

import numpy as np

from telltale.detectors.base import Detector, Finding


class LevelShift(Detector):
    """Finding when median(last ``recent``) / median(``reference`` before them) leaves
    [1/``factor``, ``factor``] (only upwards or downwards with ``direction``); re-arms when
    the ratio is back within √factor."""

    name = "levelshift"

    def __init__(self, recent: int = 15, reference: int = 200, min_reference: int = 50,
                 factor: float = 1.8, direction: str = "both", severity: str = "warning"):
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        self.recent, self.reference, self.min_reference = recent, reference, min_reference
        self.factor, self.severity = factor, severity
        self.sign = {"up": 1.0, "down": -1.0, "both": 0.0}[direction]

    def new_state(self) -> dict:
        return {"buf": [], "active": False}

    def update(self, state, steps, values):
        buf = state["buf"]
        active = state["active"]
        keep = self.recent + self.reference
        lim, rearm = math.log(self.factor), 0.5 * math.log(self.factor)
        scores = np.full(len(values), np.nan)
        findings = []
        for i, x in enumerate(values.tolist()):
            if not (x > 0 and math.isfinite(x)):
                continue
            buf.append(x)
            if len(buf) > keep:
                del buf[0]
            if len(buf) < self.recent + self.min_reference:
                continue
            ref = float(np.median(buf[:-self.recent]))
            cur = float(np.median(buf[-self.recent:]))
            r = math.log(cur / ref)
            scores[i] = r
            if not active and (self.sign * r if self.sign else abs(r)) > lim:
                active = True
                findings.append(Finding(
                    i, self.name, self.severity, r,
                    f"median of the last {self.recent} values {cur:.4g} is "
                    f"{math.exp(r):.2f}× the median {ref:.4g} before them",
                    {"recent_median": cur, "reference_median": ref}))
            elif active and abs(r) < rearm:
                active = False
        state["active"] = active
        return scores, findings
