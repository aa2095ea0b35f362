"""Inference and distribution detectors: latency SLO and p99 regression, error bursts, drift.

Window statistics are recomputed every ``every`` values (not per value), so the cost stays
flat however fast requests arrive.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, score_over


class _Windowed(Detector):
    """Keeps the last ``keep`` finite values and evaluates at every ``every``-th value."""

    keep = 1000
    every = 50
    clear = 0.0  # a score at or below this is back to normal (the detector's re-arm mark)

    @property
    def resolve_after(self) -> int:
        return 3 * self.every  # scores come every ``every`` values: several clear ones

    def abnormal(self, values, scores):
        return score_over(scores, self.clear, 1.0)

    def new_state(self) -> dict:
        return {"buf": [], "n": 0, "active": False}

    def update(self, state, steps, values):
        scores = np.full(len(values), np.nan)
        findings: list[Finding] = []
        buf = state["buf"]
        for i, x in enumerate(values.tolist()):
            if not math.isfinite(x):
                continue
            buf.append(x)
            if len(buf) > self.keep:
                del buf[0]
            state["n"] += 1
            if state["n"] % self.every == 0:
                score, f = self.evaluate(state, np.asarray(buf), i)
                scores[i] = score
                if f is not None:
                    findings.append(f)
        return scores, findings

    def evaluate(self, state, buf: np.ndarray, i: int) -> tuple[float, Finding | None]:
        raise NotImplementedError

    def _edge(self, state, bad: bool, clear: bool) -> bool:
        """True on the first bad evaluation; re-arms after a clear one."""
        if bad and not state["active"]:
            state["active"] = True
            return True
        if clear:
            state["active"] = False
        return False


class SLOBreach(_Windowed):
    """More than ``budget`` of the last ``window`` values above ``slo`` (e.g. p99 ≤ SLO).

    >>> det = SLOBreach(slo=0.2, window=10, budget=0.1, min_values=5, every=5)
    >>> values = np.array([0.1] * 6 + [0.3, 0.1, 0.3, 0.4])
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(9, '30.0% of the last 10 values are above the SLO 0.2 (budget 10.0%; p90 = 0.31)')]
    """

    name = "slo"
    parameter_constraints = {"slo": constraints.POSITIVE, "window": constraints.POSITIVE_INT,
                             "budget": constraints.UNIT, "min_values": constraints.POSITIVE_INT,
                             "every": constraints.POSITIVE_INT, "severity": constraints.SEVERITY}

    def __init__(self, slo: float = math.inf, window: int = 500, budget: float = 0.01,
                 min_values: int = 100, every: int = 50, severity: str = "critical"):
        self.slo, self.window, self.budget = slo, window, budget
        self.min_values, self.every, self.keep = min_values, every, window
        self.severity = severity
        self.clear, self.score_scale = budget / 2, budget

    def evaluate(self, state, buf, i):
        if len(buf) < self.min_values or not math.isfinite(self.slo):
            return math.nan, None
        frac = float(np.mean(buf > self.slo))
        q = 100 * (1 - self.budget)
        pq = float(np.percentile(buf, q))
        f = None
        if self._edge(state, frac > self.budget, frac <= self.budget / 2):
            f = Finding(i, self.name, self.severity, frac,
                        f"{frac:.1%} of the last {len(buf)} values are above the SLO "
                        f"{self.slo:g} (budget {self.budget:.1%}; p{q:g} = {pq:.4g})",
                        {"fraction": frac, "slo": self.slo, "pq": pq},
                        cause="the service is slower than its objective",
                        action="check load, batch size, recent deploys and the hosts' "
                               "CPU/GPU saturation")
        return frac, f


class QuantileRegression(_Windowed):
    """p``q`` of the last ``recent`` values above ``factor`` × the p``q`` of the
    ``reference`` values before them (latency regressions).

    >>> det = QuantileRegression(q=90, recent=10, reference=20, min_reference=10, every=5)
    >>> values = np.r_[np.tile([1.0, 1.2, 0.9, 1.1], 5), np.tile([2.0, 2.4], 5)]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(24, 'p90 of the last 10 values 2.4 is 2.00× the p90 1.2 of the 15 before them')]
    """

    name = "p99"
    parameter_constraints = {"q": constraints.Interval(Real, 0, 100, "neither"),
                             "recent": constraints.POSITIVE_INT,
                             "reference": constraints.POSITIVE_INT,
                             "min_reference": constraints.POSITIVE_INT,
                             "factor": constraints.Interval(Real, 1, None, "neither"),
                             "every": constraints.POSITIVE_INT, "severity": constraints.SEVERITY}

    def __init__(self, q: float = 99.0, recent: int = 200, reference: int = 1000,
                 min_reference: int = 300, factor: float = 1.5, every: int = 50,
                 severity: str = "warning"):
        self.q, self.recent, self.reference = q, recent, reference
        self.min_reference, self.factor, self.every = min_reference, factor, every
        self.keep = recent + reference
        self.severity = severity
        self.clear, self.score_scale = math.sqrt(factor), factor

    def evaluate(self, state, buf, i):
        if len(buf) < self.recent + self.min_reference:
            return math.nan, None
        cur = float(np.percentile(buf[-self.recent:], self.q))
        ref = float(np.percentile(buf[:-self.recent], self.q))
        ratio = cur / ref if ref > 0 else math.inf
        f = None
        if self._edge(state, ratio > self.factor, ratio < math.sqrt(self.factor)):
            f = Finding(i, self.name, self.severity, ratio,
                        f"p{self.q:g} of the last {self.recent} values {cur:.4g} is "
                        f"{ratio:.2f}× the p{self.q:g} {ref:.4g} of the "
                        f"{len(buf) - self.recent} before them",
                        {"recent": cur, "reference": ref, "ratio": ratio},
                        cause="a tail-latency regression (a deploy, a larger model or input, "
                              "contention)",
                        action="compare with the last deploy and the input sizes; check "
                               "saturation of the serving hosts")
        return ratio, f


class ErrorBurst(_Windowed):
    """Error indicator (1 = error): the last ``recent`` requests hold more errors than the
    baseline rate explains (binomial tail probability below ``alpha``).

    >>> det = ErrorBurst(recent=10, reference=50, min_errors=3, every=5)
    >>> values = np.r_[np.zeros(50), [0, 1, 1, 0, 1, 1, 0, 1, 0, 1]]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, f.message) for f in findings]
    [(54, '3 errors in the last 10 requests (30.0%) against a baseline of 0.10% (p = 1.2e-07)')]
    """

    name = "errorburst"
    parameter_constraints = {"recent": constraints.POSITIVE_INT,
                             "reference": constraints.POSITIVE_INT, "min_rate": constraints.UNIT,
                             "alpha": constraints.UNIT, "min_errors": constraints.POSITIVE_INT,
                             "every": constraints.POSITIVE_INT, "severity": constraints.SEVERITY}
    clear = 2.0  # -log10(p) of the re-arm mark p = 0.01

    def __init__(self, recent: int = 100, reference: int = 2000, min_rate: float = 0.001,
                 alpha: float = 1e-6, min_errors: int = 5, every: int = 10,
                 severity: str = "critical"):
        self.recent, self.reference, self.min_rate = recent, reference, min_rate
        self.alpha, self.min_errors, self.every = alpha, min_errors, every
        self.keep = recent + reference
        self.severity = severity
        self.score_scale = -math.log10(alpha)

    def evaluate(self, state, buf, i):
        if len(buf) < 2 * self.recent:
            return math.nan, None
        from scipy.stats import binom

        cur, ref = buf[-self.recent:] > 0, buf[:-self.recent] > 0
        k, n = int(cur.sum()), len(cur)
        p0 = max(float(ref.mean()), self.min_rate)
        p = float(binom.sf(k - 1, n, p0)) if k else 1.0
        score = -math.log10(max(p, 1e-300))
        f = None
        if self._edge(state, p < self.alpha and k >= self.min_errors, p > 1e-2):
            f = Finding(i, self.name, self.severity, score,
                        f"{k} errors in the last {n} requests ({k / n:.1%}) against a "
                        f"baseline of {p0:.2%} (p = {p:.2g})",
                        {"errors": k, "requests": n, "baseline_rate": p0, "p_value": p},
                        cause="a burst of failing requests",
                        action="look at the errors' status codes and the logs of the "
                               "serving hosts around this time")
        return score, f


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (quantile bins)."""
    edges = np.unique(np.percentile(reference, np.linspace(0, 100, bins + 1)))
    if len(edges) < 3:
        edges = np.array([-np.inf, float(np.median(reference)), np.inf])
    else:
        edges[0], edges[-1] = -np.inf, np.inf
    r = np.histogram(reference, edges)[0] / len(reference)
    c = np.histogram(current, edges)[0] / len(current)
    r, c = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (max CDF gap)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate((a, b))
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


class Drift(_Windowed):
    """Distribution drift of the last ``recent`` values against a ``reference`` window:
    PSI above ``psi_threshold`` and a Kolmogorov-Smirnov test significant at ``alpha``.

    ``reference="first"`` freezes the first ``reference_size`` values (a training-time
    baseline); ``"sliding"`` compares with the values just before the recent ones.

    >>> det = Drift(recent=50, reference_size=50, every=50)
    >>> values = np.r_[np.linspace(0, 1, 50), np.linspace(1, 2, 50)]
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(int(f.index), f.message) for f in findings]
    [(99, 'distribution drift: PSI 8.283 (> 0.25) and KS 0.980 (p = 1.8e-22) of the last 50 values
    against the first 50')]
    """

    name = "drift"
    parameter_constraints = {"recent": constraints.POSITIVE_INT,
                             "reference_size": constraints.POSITIVE_INT,
                             "reference": constraints.Options(("first", "sliding")),
                             "psi_threshold": constraints.POSITIVE, "alpha": constraints.UNIT,
                             "every": constraints.POSITIVE_INT, "severity": constraints.SEVERITY}

    def __init__(self, recent: int = 500, reference_size: int = 1000,
                 reference: str = "first", psi_threshold: float = 0.25, alpha: float = 1e-4,
                 every: int = 100, severity: str = "warning"):
        if reference not in ("first", "sliding"):
            raise ValueError("reference must be 'first' or 'sliding'")
        self.recent, self.reference_size, self.mode = recent, reference_size, reference
        self.psi_threshold, self.alpha, self.every = psi_threshold, alpha, every
        self.keep = recent + (0 if reference == "first" else reference_size)
        self.severity = severity
        self.clear, self.score_scale = psi_threshold / 2, psi_threshold

    def new_state(self) -> dict:
        return {**super().new_state(), "ref": []}

    def update(self, state, steps, values):
        if self.mode == "first" and len(state["ref"]) < self.reference_size:
            v = values[np.isfinite(values)]
            room = self.reference_size - len(state["ref"])
            state["ref"].extend(v[:room].tolist())
            if len(v) <= room:
                state["n"] += len(v)
                return np.full(len(values), np.nan), []
            cut = np.flatnonzero(np.isfinite(values))[room]
            s1 = np.full(cut, np.nan)
            state["n"] += room
            s2, f = super().update(state, steps[cut:], values[cut:])
            for x in f:
                x.index += cut
            return np.concatenate((s1, s2)), f
        return super().update(state, steps, values)

    def evaluate(self, state, buf, i):
        if len(buf) < self.recent:
            return math.nan, None
        cur = buf[-self.recent:]
        if self.mode == "first":
            ref = np.asarray(state["ref"])
        else:
            ref = buf[:-self.recent]
            if len(ref) < self.reference_size // 2:
                return math.nan, None
        p = psi(ref, cur)
        d = ks_statistic(ref, cur)
        n, m = len(ref), len(cur)
        en = math.sqrt(n * m / (n + m))
        # asymptotic KS p-value (Kolmogorov distribution, leading terms)
        lam = (en + 0.12 + 0.11 / en) * d
        pval = min(1.0, max(0.0, 2 * sum((-1) ** (j - 1) * math.exp(-2 * j * j * lam * lam)
                                         for j in range(1, 50))))
        f = None
        bad = p > self.psi_threshold and pval < self.alpha
        if self._edge(state, bad, p < self.psi_threshold / 2):
            f = Finding(i, self.name, self.severity, p,
                        f"distribution drift: PSI {p:.3f} (> {self.psi_threshold:g}) and "
                        f"KS {d:.3f} (p = {pval:.2g}) of the last {m} values against "
                        f"{'the first' if self.mode == 'first' else 'the previous'} {n}",
                        {"psi": p, "ks": d, "p_value": pval,
                         "reference_mean": float(np.mean(ref)), "recent_mean": float(cur.mean())},
                        cause="the inputs or predictions no longer look like the reference "
                              "data",
                        action="compare recent inputs with the training data; check upstream "
                               "data pipelines; consider retraining")
        return p, f
