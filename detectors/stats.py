"""Classical streaming statistics: robust z (median/MAD), EWMA z, Page-Hinkley change points."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over

_MAD_TO_STD = 1.4826  # MAD of a normal distribution × this = its std


class _ZDetector(Detector):
    """Shared by the z detectors: threshold by direction, a cooldown in steps."""

    parameter_constraints = {"window": constraints.POSITIVE_INT, "alpha": constraints.UNIT,
                             "min_periods": constraints.POSITIVE_INT,
                             "threshold": constraints.POSITIVE, "direction": constraints.DIRECTION,
                             "rel_floor": constraints.Interval(Real, 0),
                             "cooldown": constraints.NON_NEGATIVE_INT,
                             "severity": constraints.SEVERITY}

    def __init__(self, min_periods: int, threshold: float, direction: str,
                 rel_floor: float, cooldown: int, severity: str):
        self.min_periods, self.threshold = min_periods, threshold
        self.direction, self.rel_floor, self.cooldown = direction, rel_floor, cooldown
        self.severity = severity
        self.score_scale = threshold / 2

    def abnormal(self, values, scores):
        sign = {"up": 1.0, "down": -1.0}.get(self.direction, 0.0)
        return score_over(scores, self.threshold / 2, sign)

    def fires(self, z: float, step: int, last: int | None) -> bool:
        if self.direction == "up":
            hit = z >= self.threshold
        elif self.direction == "down":
            hit = z <= -self.threshold
        else:
            hit = abs(z) >= self.threshold
        return hit and (last is None or step - last > self.cooldown)


class RobustZ(_ZDetector):
    """z = (x - median) / (1.4826 · MAD) over the previous ``window`` finite values.

    Outliers in the window move neither statistic, so one spike does not hide the next.

    >>> det = RobustZ(min_periods=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 3), 3.0]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(12, '3 is +13.2 robust σ from its 12-value median 1.05 (MAD-based σ 0.148)')]
    """

    name = "robustz"

    def __init__(self, window: int = 200, min_periods: int = 30, threshold: float = 8.0,
                 direction: str = "both", rel_floor: float = 1e-3, cooldown: int = 50,
                 severity: str = "warning"):
        super().__init__(min_periods, threshold, direction, rel_floor, cooldown, severity)
        self.window = window

    def new_state(self) -> dict:
        return {"buf": [], "last_alert": None}

    def update(self, state, steps, values):
        buf, last = state["buf"], state["last_alert"]
        scores = np.full(len(values), np.nan)
        findings = []
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            if len(buf) >= self.min_periods:
                arr = np.asarray(buf)
                med = float(np.median(arr))
                scale = _MAD_TO_STD * float(np.median(np.abs(arr - med)))
                scale = max(scale, self.rel_floor * abs(med) + 1e-12)
                z = (x - med) / scale
                scores[i] = z
                step = int(steps[i])
                if self.fires(z, step, last):
                    last = step
                    findings.append(Finding(
                        i, self.name, self.severity, z,
                        f"{x:.6g} is {z:+.1f} robust σ from its {len(buf)}-value median "
                        f"{med:.6g} (MAD-based σ {scale:.3g})",
                        {"median": med, "scale": scale, "n": len(buf)}))
            buf.append(x)
            if len(buf) > self.window:
                del buf[0]
        state["last_alert"] = last
        return scores, findings


class EWMAZ(_ZDetector):
    """z of each value against an exponentially weighted mean and variance (``alpha``).

    >>> det = EWMAZ(min_periods=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 3), 3.0]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(12, '3 is +24.8σ from its exponentially weighted mean 1.02298 ± 0.0798')]
    """

    name = "ewma"

    def __init__(self, alpha: float = 0.05, min_periods: int = 30, threshold: float = 6.0,
                 direction: str = "both", rel_floor: float = 1e-3, cooldown: int = 50,
                 severity: str = "warning"):
        super().__init__(min_periods, threshold, direction, rel_floor, cooldown, severity)
        self.alpha = alpha

    def new_state(self) -> dict:
        return {"mean": None, "var": 0.0, "n": 0, "last_alert": None}

    def update(self, state, steps, values):
        a = self.alpha
        mean, var, n, last = state["mean"], state["var"], state["n"], state["last_alert"]
        scores = np.full(len(values), np.nan)
        findings = []
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            if mean is None:
                mean, n = x, 1
                continue
            sd = max(math.sqrt(var), self.rel_floor * abs(mean) + 1e-12)
            z = (x - mean) / sd
            if n >= self.min_periods:
                scores[i] = z
                step = int(steps[i])
                if self.fires(z, step, last):
                    last = step
                    findings.append(Finding(
                        i, self.name, self.severity, z,
                        f"{x:.6g} is {z:+.1f}σ from its exponentially weighted mean "
                        f"{mean:.6g} ± {sd:.3g}", {"mean": mean, "std": sd}))
            d = x - mean  # West's incremental EW mean/variance
            mean += a * d
            var = (1 - a) * (var + a * d * d)
            n += 1
        state.update(mean=mean, var=var, n=n, last_alert=last)
        return scores, findings


class PageHinkley(Detector):
    """Page-Hinkley test for a shift of the mean, both directions.

    The cumulative deviation from the running mean (minus a tolerance ``delta`` × σ)
    is compared with its extreme so far; a gap above ``threshold`` × σ is a change point,
    after which the test restarts on the new level. σ comes from the first ``warmup``
    values (a robust estimate), so the test is scale-free.

    >>> det = PageHinkley(warmup=10, threshold=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 3), np.full(8, 2.0)]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(13, 'level shifted up (Page-Hinkley statistic 8.0σ > 5σ; running mean 1.41, now 2)')]
    """

    name = "pagehinkley"
    parameter_constraints = {"delta": constraints.Interval(Real, 0),
                             "threshold": constraints.POSITIVE,
                             "warmup": constraints.Interval(Real, 2),
                             "direction": constraints.DIRECTION, "severity": constraints.SEVERITY}

    def __init__(self, delta: float = 0.5, threshold: float = 25.0, warmup: int = 50,
                 direction: str = "both", severity: str = "warning"):
        self.delta, self.threshold, self.warmup = delta, threshold, warmup
        if direction not in constraints.DIRECTION.values:
            raise ValueError(f"pagehinkley: parameter 'direction' must be {constraints.DIRECTION}, "
                             f"got {direction!r}")
        self.direction, self.severity = direction, severity
        self.score_scale = threshold / 2

    def new_state(self) -> dict:
        return {"warm": [], "sigma": None, "n": 0, "mean": 0.0,
                "up": 0.0, "up_min": 0.0, "down": 0.0, "down_max": 0.0}

    def update(self, state, steps, values):
        scores = np.full(len(values), np.nan)
        findings = []
        s = state
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            if s["sigma"] is None:
                s["warm"].append(x)
                if len(s["warm"]) >= self.warmup:
                    w = np.asarray(s["warm"])
                    med = float(np.median(w))
                    sig = _MAD_TO_STD * float(np.median(np.abs(w - med)))
                    s["sigma"] = max(sig, float(np.std(w)) * 0.1, 1e-3 * abs(med) + 1e-12)
                    s["warm"] = []
                    self._restart(s, med)
                continue
            sig = s["sigma"]
            s["n"] += 1
            s["mean"] += (x - s["mean"]) / s["n"]
            s["up"] += (x - s["mean"]) / sig - self.delta
            s["up_min"] = min(s["up_min"], s["up"])
            s["down"] += (x - s["mean"]) / sig + self.delta
            s["down_max"] = max(s["down_max"], s["down"])
            g_up, g_down = s["up"] - s["up_min"], s["down_max"] - s["down"]
            score = g_up if g_up >= g_down else -g_down
            scores[i] = score
            up_hit = g_up > self.threshold and self.direction in ("up", "both")
            down_hit = g_down > self.threshold and self.direction in ("down", "both")
            if up_hit or down_hit:
                before = s["mean"]
                findings.append(Finding(
                    i, self.name, self.severity, score,
                    f"level shifted {'up' if up_hit else 'down'} (Page-Hinkley statistic "
                    f"{max(g_up, g_down):.1f}σ > {self.threshold:g}σ; running mean "
                    f"{before:.6g}, now {x:.6g})", {"mean": before, "sigma": sig}))
                self._restart(s, x)
        return scores, findings

    @staticmethod
    def _restart(s: dict, level: float) -> None:
        s.update(n=1, mean=level, up=0.0, up_min=0.0, down=0.0, down_max=0.0)
