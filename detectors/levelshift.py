"""Level shift on a log scale: the recent median moved by a factor from the reference median.

For heavy-tailed positive series (step time, throughput): one slow step moves neither
median, a sustained 2× slowdown moves the recent one.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


class LevelShift(Detector):
    """Finding when median(last ``recent``) / median(``reference`` before them) leaves
    [1/``factor``, ``factor``] (only upwards or downwards with ``direction``).

    While the shift lasts the reference median is the one from before it (frozen), so a
    slowdown that stays is one open incident, not a new normal; it is over when the recent
    median is back within √factor of that reference.

    >>> det = LevelShift(recent=3, reference=10, min_reference=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 3), np.full(4, 2.0)]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(13, 'median of the last 3 values 2 is 1.90× the median 1.05 before them')]
    """

    name = "levelshift"
    parameter_constraints = {"recent": constraints.POSITIVE_INT,
                             "reference": constraints.POSITIVE_INT,
                             "min_reference": constraints.POSITIVE_INT,
                             "factor": constraints.Interval(Real, 1, None, "neither"),
                             "direction": constraints.DIRECTION, "severity": constraints.SEVERITY}
    resolve_after = 100

    def __init__(self, recent: int = 15, reference: int = 200, min_reference: int = 50,
                 factor: float = 1.8, direction: str = "both", severity: str = "warning"):
        if direction not in ("up", "down", "both"):
            raise ValueError(f"direction must be up, down or both, not {direction!r}")
        self.recent, self.reference, self.min_reference = recent, reference, min_reference
        self.factor, self.severity = factor, severity
        self.sign = {"up": 1.0, "down": -1.0, "both": 0.0}[direction]
        self.score_scale = 0.5 * math.log(factor)

    def abnormal(self, values, scores):
        return score_over(scores, 0.5 * math.log(self.factor), self.sign)

    def new_state(self) -> dict:
        return {"buf": [], "active": False, "frozen": None}

    def update(self, state, steps, values):
        buf = state["buf"]
        active = state["active"]
        keep, recent = self.recent + self.reference, self.recent
        lim, rearm = math.log(self.factor), 0.5 * math.log(self.factor)
        scores = np.full(len(values), np.nan)
        findings: list[Finding] = []
        ok = np.flatnonzero((values > 0) & np.isfinite(values))
        if not len(ok):
            return scores, findings
        old = len(buf)
        arr = np.concatenate([np.asarray(buf, dtype=float), values[ok]])
        # medians of the window ending at each new value: a growing window while the buffer
        # fills, then one vectorised median over all full windows of the batch
        ref_med = np.full(len(ok), np.nan)
        cur_med = np.full(len(ok), np.nan)
        need = recent + self.min_reference
        first_full = max(keep - 1 - old, 0)  # index into ok of the first full window
        for k in range(min(first_full, len(ok))):
            end = old + k + 1
            if end >= need:
                ref_med[k] = np.median(arr[:end - recent])
                cur_med[k] = np.median(arr[end - recent:end])
        if first_full < len(ok):
            win = np.lib.stride_tricks.sliding_window_view(arr, keep)[old + first_full + 1 - keep:]
            ref_med[first_full:] = np.median(win[:, :-recent], axis=1)
            cur_med[first_full:] = np.median(win[:, -recent:], axis=1)
        frozen = state.get("frozen")
        for k, i in enumerate(ok.tolist()):
            ref, cur = float(ref_med[k]), float(cur_med[k])
            if ref != ref:  # still filling
                continue
            if active and frozen is not None:
                ref = frozen
            r = math.log(cur / ref)
            scores[i] = r
            if not active and (self.sign * r if self.sign else abs(r)) > lim:
                active, frozen = True, ref
                findings.append(Finding(
                    i, self.name, self.severity, r,
                    f"median of the last {self.recent} values {cur:.4g} is "
                    f"{math.exp(r):.2f}× the median {ref:.4g} before them",
                    {"recent_median": cur, "reference_median": ref}))
            elif active and abs(r) < rearm:
                active, frozen = False, None
        state["buf"] = arr[-keep:].copy()  # an array (detectors/state.py encodes it)
        state["active"] = active
        state["frozen"] = frozen
        return scores, findings
