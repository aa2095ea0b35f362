"""Detection pipelines per metric family, declared as data.

Each rule is ``(pattern, [(detector name, params), ...])``; the first pattern that
matches a metric name (fnmatch, case-insensitive) decides which detectors watch it, and
the detectors' parameters (thresholds, directions) are the alert decision for that family.
Run-level rules (cross-metric, cross-rank) are listed in ``DEFAULT_RUN_RULES``.

Override with a JSON file through ``TELLTALE_PIPELINES``: either a list of metric rules,
or ``{"metrics": [...], "run_rules": [["overfit", {...}], ["mvknn", {}]]}``.
"""

from __future__ import annotations

import fnmatch
import json
from functools import lru_cache

from telltale.detectors.base import Detector
from telltale.detectors.divergence import Divergence
from telltale.detectors.growth import Growth
from telltale.detectors.inference import Drift, ErrorBurst, QuantileRegression, SLOBreach
from telltale.detectors.jump import Jump
from telltale.detectors.levelshift import LevelShift
from telltale.detectors.likelihood import LikelihoodEnsemble
from telltale.detectors.ml import IsolationForestDetector, KNNDistance, OneClassSVMDetector
from telltale.detectors.nonfinite import NonFinite
from telltale.detectors.spikerate import SpikeRate
from telltale.detectors.stats import EWMAZ, PageHinkley, RobustZ
from telltale.detectors.training import Plateau, Range
from telltale.detectors.zscore import RollingZScore

REGISTRY: dict[str, type[Detector]] = {
    d.name: d for d in (
        NonFinite, RollingZScore, RobustZ, EWMAZ, PageHinkley, Divergence, LevelShift,
        SpikeRate, Jump, Growth, Plateau, Range, SLOBreach, QuantileRegression, ErrorBurst,
        Drift, KNNDistance, OneClassSVMDetector, IsolationForestDetector,
        LikelihoodEnsemble)
}

_NF = ("nonfinite", {})
_LOGZ = ("zscore", {"log": True, "threshold": 8.0})
# timing: only slower is a fault (a speed-up is good news); throughput: only lower
_TIMING = [_NF, ("levelshift", {"direction": "up"}), ("spikerate", {})]
_RATE = [_NF, ("levelshift", {"direction": "down"})]

DEFAULT_PIPELINES: list[tuple[str, list[tuple[str, dict]]]] = [
    # loss-like: broken values, upward spikes (log scale: batch losses are multiplicative
    # and heavy-tailed near convergence), sustained rise
    ("*loss*", [_NF, ("zscore", {"direction": "up", "threshold": 6.0, "log": True}),
                ("divergence", {}), ("plateau", {})]),
    # learning rate: schedules move it smoothly; a ×10 jump in one step is a fault
    ("lr", [_NF, ("jump", {})]),
    ("*learning_rate*", [_NF, ("jump", {})]),
    # norms and ratios: multiplicative, so z-scores on a log scale
    ("*grad*norm*", [_NF, _LOGZ]),
    ("*param*norm*", [_NF, _LOGZ]),
    ("*weight*norm*", [_NF, _LOGZ]),
    ("*update_ratio*", [_NF, ("jump", {"severity": "warning"}),
                        ("range", {"low": 1e-7, "high": 0.5})]),
    # timing and throughput: heavy-tailed; sustained shifts and repeated stalls
    ("*step_time*", _TIMING),
    ("*latency*", [*_TIMING, ("p99", {})]),
    ("*ttft*", [*_TIMING, ("p99", {})]),
    ("*duration*", _TIMING),
    ("*per_s*", _RATE),
    ("*throughput*", _RATE),
    # inference: error bursts (0/1 per request), drift of predictions and inputs
    ("error", [_NF, ("errorburst", {})]),
    ("*errors*", [_NF, ("errorburst", {})]),
    ("pred*", [_NF, ("drift", {})]),
    ("input_*", [_NF, ("drift", {})]),
    ("feature_*", [_NF, ("drift", {})]),
    # memory: steady growth
    ("*rss*", [_NF, ("growth", {})]),
    ("*mem*", [_NF, ("growth", {})]),
    # batch-level accuracy, waits, utilisation: too noisy alone; only broken values
    ("*acc*", [_NF]),
    ("*wait*", [_NF]),
    ("*cpu*", [_NF]),
    # everything else: broken values and large jumps either way
    ("*", [_NF, ("zscore", {"threshold": 8.0})]),
]

DEFAULT_RUN_RULES: list[tuple[str, dict]] = [("overfit", {}), ("straggler", {})]


def _run_rule_registry() -> dict:
    from telltale.detectors.ml import MultivariateKNN
    from telltale.detectors.runrules import RULES

    return {**RULES, MultivariateKNN.name: MultivariateKNN}


class Pipelines:
    """Maps a metric name to its detectors (instances are shared; state is not)."""

    def __init__(self, rules=None, run_rules=None):
        self.rules = [(p.lower(), [(n, dict(kw)) for n, kw in dets])
                      for p, dets in (rules or DEFAULT_PIPELINES)]
        for _, dets in self.rules:
            for n, _ in dets:
                if n not in REGISTRY:
                    raise ValueError(f"unknown detector {n!r}; known: {sorted(REGISTRY)}")
        known = _run_rule_registry()
        self.run_rule_specs = [(n, dict(kw)) for n, kw in
                               (DEFAULT_RUN_RULES if run_rules is None else run_rules)]
        for n, _ in self.run_rule_specs:
            if n not in known:
                raise ValueError(f"unknown run rule {n!r}; known: {sorted(known)}")
        self._cache: dict[str, list[Detector]] = {}

    @classmethod
    def from_file(cls, path: str) -> Pipelines:
        with open(path) as f:
            doc = json.load(f)
        metrics, run_rules = (doc, None) if isinstance(doc, list) else (
            doc.get("metrics"), doc.get("run_rules"))
        return cls([(p, [tuple(d) for d in dets]) for p, dets in metrics] if metrics else None,
                   [tuple(r) for r in run_rules] if run_rules is not None else None)

    def run_rules(self) -> list:
        """Fresh run-level rule instances (their state lives in the run's state)."""
        known = _run_rule_registry()
        return [known[n](**kw) for n, kw in self.run_rule_specs]

    def for_metric(self, metric: str) -> list[Detector]:
        dets = self._cache.get(metric)
        if dets is None:
            dets = _build(self.rules, metric.lower())
            self._cache[metric] = dets
        return dets


def _build(rules, name: str) -> list[Detector]:
    for pattern, dets in rules:
        if fnmatch.fnmatchcase(name, pattern):
            return [REGISTRY[n](**kw) for n, kw in dets]
    return []


@lru_cache(maxsize=1)
def default_pipelines() -> Pipelines:
    return Pipelines()
