"""Univariate anomaly score for NAB-style scoring: two raw scores, each turned into an anomaly
likelihood, combined by max, and reported only where the combined score makes a new peak.

Raw scores, each in 0..1 and computed before the value is learned:

- ``neighbour``: RMS distance of the last m values (ending at this one) to the nearest of
  the previous ``history`` windows of the same length, over ``neighbour_scale`` × the std of
  the buffered values, the largest over m in ``dims`` (short, medium and long patterns; the
  nearest-neighbour idea of KNN-CAD, Burnaev & Ishimtsev 2016);
- ``change``: |x - previous value| over ``change_scale`` × its running mean (EWMA,
  ``change_alpha``).

The scales keep ordinary noise well inside 0..1: clipped raw scores hide how large an
event is, and raw scores near 0 fall under the likelihood's variance floor.

Each raw stream goes through an anomaly-likelihood stage, our implementation of Numenta's
(Ahmad et al., "Unsupervised real-time anomaly detection for streaming data", 2017; NAB's
``numenta`` detector, MIT licensed): the mean of the last ``averaging`` raw scores is compared
with a normal fitted to the running averages of up to ``likelihood_history`` past scores
(re-fitted every ``reestimate`` values; mean ≥ 0.03, variance ≥ 0.0003), a second very
unlikely value in a row is capped at 1 - 1e-3, and the likelihood is put on Numenta's log
scale, so 0.5 ≈ likelihood 1 - 1e-5. Parameters are NAB's for files of ≥ 5000 rows
(``learning`` + ``samples`` = 750 values before the first estimate).

The output is max(two likelihoods) where it exceeds every combined score of the previous
``rest`` values, else 0: one high score per episode, at its onset, for any threshold.

State: the last ``history + 2·max(dims) - 2`` values, two likelihood histories of at most
``likelihood_history`` floats and ``rest`` recent scores, about 20k floats (≈ 400 kB of
JSON) per series at most.
"""

from __future__ import annotations

import math

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import Detector, Finding, UnitScored, score_over

_LOG_FLOOR = math.log(1.0 - 0.9999999999)


class AnomalyLikelihood:
    """Numenta's anomaly likelihood of a raw score stream, on its log scale (0..1)."""

    def __init__(self, learning: int = 375, samples: int = 375, history: int = 8640,
                 reestimate: int = 100, averaging: int = 10):
        self.learning, self.samples, self.history = learning, samples, history
        self.reestimate, self.averaging = reestimate, averaging

    def new_state(self) -> dict:
        return {"n": 0, "recent": [], "avgs": [], "mean": None, "std": None, "since": 0,
                "tail": 1.0}

    def update(self, state: dict, raw: float) -> float:
        recent, avgs = state["recent"], state["avgs"]
        recent.append(raw)
        if len(recent) > self.averaging:
            del recent[0]
        avg = sum(recent) / len(recent)
        n = state["n"]
        state["n"] = n + 1
        if n >= self.learning:
            avgs.append(avg)
            if len(avgs) > self.history:
                del avgs[0]
        if n < self.learning + self.samples:
            return _log_scale(0.5)
        if state["mean"] is None or state["since"] >= self.reestimate:
            a = np.asarray(avgs)
            state["mean"] = max(float(a.mean()), 0.03)
            state["std"] = math.sqrt(max(float(a.var()), 0.0003))
            state["since"] = 0
        state["since"] += 1
        tail = 0.5 * math.erfc(abs(avg - state["mean"]) / state["std"] / math.sqrt(2.0))
        capped = 1e-3 if tail <= 1e-5 and state["tail"] <= 1e-5 else tail
        state["tail"] = tail
        return _log_scale(1.0 - capped)


def _log_scale(likelihood: float) -> float:
    return min(max(math.log(1.0000000001 - likelihood) / _LOG_FLOOR, 0.0), 1.0)


class LikelihoodEnsemble(UnitScored, Detector):
    """Anomaly score in 0..1 per value: max of two anomaly likelihoods, new peaks only.

    >>> det = LikelihoodEnsemble(dims=(2, 4), history=40, learning=40, samples=9,
    ...                          likelihood_history=100, reestimate=15, rest=20)
    >>> values = np.sin(np.arange(200) / 3)
    >>> values[150] = 4.0
    >>> scores, findings = det.update(det.new_state(), np.arange(1, len(values) + 1), values)
    >>> [(f.index, round(f.score, 2)) for f in findings]
    [(150, 0.81)]
    """

    name = "likelihood"
    parameter_constraints = {"threshold": constraints.UNIT, "change_alpha": constraints.UNIT,
                             "severity": constraints.SEVERITY}

    def abnormal(self, values, scores):
        return score_over(scores, self.threshold, 1.0)

    def __init__(self, dims: tuple[int, ...] = (4, 8, 16), history: int = 1000,
                 change_alpha: float = 0.01,
                 rest: int = 150, learning: int = 375, samples: int = 375,
                 likelihood_history: int = 8640, reestimate: int = 100, averaging: int = 10,
                 neighbour_scale: float = 2.0, change_scale: float = 8.0,
                 threshold: float = 0.5, severity: str = "warning"):
        if not dims or min(dims) < 1 or history < 20:
            raise ValueError("need dims >= 1 and history >= 20")
        self.dims, self.history, self.rest = tuple(dims), history, rest
        self.change_alpha = change_alpha
        self.threshold, self.severity = threshold, severity
        self.change_scale, self.neighbour_scale = change_scale, neighbour_scale
        self.stage = AnomalyLikelihood(learning, samples, likelihood_history, reestimate,
                                       averaging)

    def new_state(self) -> dict:
        return {"buf": [], "mae": None, "near": self.stage.new_state(),
                "change": self.stage.new_state(), "recent": []}

    def neighbour_raw(self, buf: list[float], x: float) -> float:
        """Distance of the windows ending at ``x`` to their nearest past windows, in buffer
        stds; the largest over ``dims`` (a dim with fewer than 20 past windows counts 0)."""
        c = np.asarray(buf + [x])
        n, top = len(c), max(self.dims)
        # past windows of length m end at e in [m - 1, n - 1 - m]; the last ``history`` count
        ends = [(m, max(m - 1, n - m - self.history), n - 1 - m) for m in self.dims
                if n - m >= m + 19]
        if not ends:
            return 0.0
        lo, hi = min(e[1] for e in ends), max(e[2] for e in ends)
        padded = np.concatenate((np.full(top - 1, np.nan), c))
        lags = np.lib.stride_tricks.sliding_window_view(padded, top)[lo:hi + 1, ::-1]
        with np.errstate(over="ignore", invalid="ignore"):
            # cum[k, j]: squared distance over lags 0..j of the window ending at lo + k
            cum = np.cumsum((lags - c[:-top - 1:-1]) ** 2, axis=1)
            best = max(float(cum[a - lo:b - lo + 1, m - 1].min()) / m for m, a, b in ends)
            scale = float(c[:-1].std())
        if best == 0.0:
            return 0.0
        r = math.sqrt(best) / (self.neighbour_scale * scale) if scale > 0 else math.inf
        return min(1.0, r) if math.isfinite(r) else 1.0  # also inf/inf at extreme magnitudes

    def change_raw(self, state: dict, x: float) -> float:
        """|x - previous| over ``change_scale`` × its running mean; learns it."""
        buf, mae = state["buf"], state["mae"]
        if not buf:
            return 0.0
        e = abs(x - buf[-1])
        if mae is None:
            state["mae"] = e if math.isfinite(e) else None
            return 0.0
        raw = min(1.0, e / (self.change_scale * mae)) if mae > 0 else (1.0 if e > 0 else 0.0)
        if not math.isfinite(e):  # a jump beyond float range: flag it, do not learn it
            return 1.0
        state["mae"] = (1.0 - self.change_alpha) * mae + self.change_alpha * e
        return raw if math.isfinite(raw) else 1.0

    def update(self, state, steps, values):
        scores = np.full(len(values), np.nan)
        findings = []
        buf, recent = state["buf"], state["recent"]
        keep = self.history + 2 * max(self.dims) - 2
        for i, x in enumerate(np.asarray(values, float).tolist()):
            if not math.isfinite(x):
                continue
            near = self.stage.update(state["near"], self.neighbour_raw(buf, x))
            change = self.stage.update(state["change"], self.change_raw(state, x))
            buf.append(x)
            if len(buf) > keep:
                del buf[0]
            s = max(near, change)
            out = s if not recent or s > max(recent) else 0.0
            recent.append(s)
            if len(recent) > self.rest:
                del recent[0]
            scores[i] = out
            if out >= self.threshold:
                which = "pattern of values" if near >= change else "changes"
                findings.append(Finding(
                    i, self.name, self.severity, out,
                    f"unlikely recent {which} (anomaly score {out:.2f} at value {x:.4g})",
                    {"neighbour": near, "change": change}))
        return scores, findings
