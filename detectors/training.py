"""Training rules that need no statistics of the noise: stuck training, values out of range."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding


class Plateau(Detector):
    """Not learning: the smoothed loss has not improved by ``rel`` over ``patience`` values
    and has never gone below ``stuck_frac`` × its starting level. (A loss that learned and
    then rose is divergence, not a plateau.)

    >>> det = Plateau(patience=10, warmup=5)
    >>> values = 2.3 + 0.01 * (np.arange(20) % 2)
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [f.index for f in findings]
    [14]
    """

    name = "plateau"
    parameter_constraints = {"alpha": constraints.UNIT, "patience": constraints.POSITIVE_INT,
                             "rel": constraints.UNIT,
                             "stuck_frac": constraints.Interval(Real, 0, 1, "right"),
                             "warmup": constraints.POSITIVE_INT, "severity": constraints.SEVERITY}
    resolve_after = 0  # stuck training ends with the run (or a new best, which re-arms)

    def __init__(self, alpha: float = 0.05, patience: int = 300, rel: float = 0.01,
                 stuck_frac: float = 0.9, warmup: int = 50, severity: str = "warning"):
        self.alpha, self.patience, self.rel = alpha, patience, rel
        self.stuck_frac, self.warmup, self.severity = stuck_frac, warmup, severity

    def new_state(self) -> dict:
        return {"level": None, "start": None, "best": None, "since": 0, "n": 0,
                "active": False}

    def update(self, state, steps, values):
        s = state
        scores = np.full(len(values), np.nan)
        findings = []
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            s["level"] = x if s["level"] is None else s["level"] + self.alpha * (x - s["level"])
            s["n"] += 1
            if s["n"] == self.warmup:
                s["start"] = s["best"] = s["level"]
            if s["n"] <= self.warmup:
                continue
            if s["level"] < s["best"] * (1 - self.rel):
                s["best"], s["since"] = s["level"], 0
                s["active"] = False
            else:
                s["since"] += 1
            stuck = s["best"] / s["start"] if s["start"] else math.nan
            scores[i] = s["since"] / self.patience
            if (s["since"] >= self.patience and stuck >= self.stuck_frac
                    and not s["active"]):
                s["active"] = True
                findings.append(Finding(
                    i, self.name, self.severity, float(s["since"] / self.patience),
                    f"smoothed level {s['level']:.4g} has not improved for {s['since']} values "
                    f"and never went below {stuck:.0%} of where it started ({s['start']:.4g}): "
                    "not learning", {"level": s["level"], "start": s["start"]},
                    cause="the model is not learning (learning rate too low or too high, "
                          "frozen weights, a data or label bug)",
                    action="check the learning rate and optimizer, that gradients reach "
                           "the weights, and a few input/label pairs"))
        return scores, findings


class Range(Detector):
    """Values outside [``low``, ``high``] for ``patience`` values in a row.

    >>> det = Range(low=0.0, high=1.0, patience=2, warmup=0)
    >>> values = np.array([0.5, 0.7, 1.2, 1.3, 0.9])
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(3, '1.3 is above the healthy range [0, 1] for 2 values')]
    """

    name = "range"
    parameter_constraints = {"low": constraints.Interval(Real), "high": constraints.Interval(Real),
                             "patience": constraints.POSITIVE_INT,
                             "warmup": constraints.NON_NEGATIVE_INT,
                             "severity": constraints.SEVERITY}

    def abnormal(self, values, scores):
        return np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0) > 0.5

    def __init__(self, low: float = -math.inf, high: float = math.inf, patience: int = 3,
                 warmup: int = 20, severity: str = "warning"):
        self.low, self.high, self.patience = low, high, patience
        self.warmup, self.severity = warmup, severity

    def new_state(self) -> dict:
        return {"n": 0, "out": 0, "active": False}

    def update(self, state, steps, values):
        scores = np.full(len(values), np.nan)
        findings = []
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            state["n"] += 1
            out = x < self.low or x > self.high
            scores[i] = 1.0 if out else 0.0
            if state["n"] <= self.warmup:
                continue
            if out:
                state["out"] += 1
                if state["out"] >= self.patience and not state["active"]:
                    state["active"] = True
                    side = "below" if x < self.low else "above"
                    bound = self.low if x < self.low else self.high
                    findings.append(Finding(
                        i, self.name, self.severity, 1.0,
                        f"{x:.4g} is {side} the healthy range [{self.low:g}, {self.high:g}] "
                        f"for {state['out']} values", {"bound": bound}))
            else:
                state["out"] = 0
                state["active"] = False
        return scores, findings
