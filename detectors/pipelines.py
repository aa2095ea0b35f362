"""Detection pipelines per metric family, declared as data.

Each rule is ``(pattern, [(detector name, params), ...])``; the first pattern that
matches a metric name (fnmatch, case-insensitive) decides which detectors watch it, and
the detectors' parameters (thresholds, directions) are the alert decision for that family.
Run-level rules (cross-metric, cross-rank) are listed in ``DEFAULT_RUN_RULES``.

Findings are grouped into incidents by *family* (``DEFAULT_FAMILIES``): metrics that show
one problem (a loss and its accuracy, step time and samples/s) join one open incident
instead of paging once each.

Override with a JSON file through ``TELLTALE_PIPELINES``: either a list of metric rules,
or ``{"metrics": [...], "run_rules": [["overfit", {...}], ["mvknn", {}]],
"families": [["*loss*", "optimisation"], ...]}``. Every configured detector is built
(and its parameters checked) when the pipelines load, so a misspelt parameter is an error
at start-up that names it.
"""

from __future__ import annotations

import fnmatch
import json
from functools import lru_cache

from telltale.detectors.base import AlertSemantics, Detector, build
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

_NF: tuple[str, dict] = ("nonfinite", {})
_LOGZ = ("zscore", {"log": True, "threshold": 8.0})
# timing: a slowdown is the run going at half speed or worse (the median of the last 25
# steps at 2× the median of the 400 before them); only slower is a fault (a speed-up is
# good news); throughput: only lower
_SHIFT = {"factor": 2.0, "recent": 25, "reference": 400}
_TIMING = [_NF, ("levelshift", {"direction": "up", **_SHIFT}), ("spikerate", {})]
_RATE = [_NF, ("levelshift", {"direction": "down", **_SHIFT})]

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

# the multivariate KNN and One-Class SVM score every step vector (InfluxDB "scores", the
# page) but do not page: on validation they add no recall at the precision target
DEFAULT_RUN_RULES: list[tuple[str, dict]] = [
    ("overfit", {}), ("straggler", {}), ("weights", {}),
    ("mvknn", {"page": False}), ("mvocsvm", {"page": False})]

# metric glob -> family: findings of one family in one run are one incident; first match
# wins, a metric that matches none is a family of its own
DEFAULT_FAMILIES: list[tuple[str, str]] = [
    ("*loss*", "optimisation"), ("*acc*", "optimisation"), ("*grad*", "optimisation"),
    ("*param*norm*", "optimisation"), ("*weight*norm*", "optimisation"),
    ("*update_ratio*", "optimisation"), ("lr", "optimisation"),
    ("*learning_rate*", "optimisation"), ("*perplexity*", "optimisation"),
    ("*step_time*", "speed"), ("*per_s*", "speed"), ("*throughput*", "speed"),
    ("*wait*", "speed"), ("*cpu*", "speed"), ("*duration*", "speed"),
    ("*latency*", "latency"), ("*ttft*", "latency"),
    ("error", "errors"), ("*errors*", "errors"),
    ("*rss*", "memory"), ("*mem*", "memory"),
    ("pred*", "drift"), ("input_*", "drift"), ("feature_*", "drift"),
]
NONFINITE_FAMILY = "nonfinite"  # a run gone NaN/Inf: every later finding is its consequence


def _run_rule_registry() -> dict:
    from telltale.detectors.ml import MultivariateKNN, MultivariateOCSVM
    from telltale.detectors.runrules import RULES

    return {**RULES, MultivariateKNN.name: MultivariateKNN,
            MultivariateOCSVM.name: MultivariateOCSVM}


class Pipelines:
    """Maps a metric name to its detectors and family (instances are shared; state is not).

    Every detector and run rule is built once, here, so bad parameters fail at load.
    """

    def __init__(self, rules=None, run_rules=None, families=None):
        self.rules = []  # (pattern, built detectors)
        self.rule_specs = [(p.lower(), [(n, dict(kw)) for n, kw in dets])
                           for p, dets in (rules or DEFAULT_PIPELINES)]  # as declared
        for p, dets in (rules or DEFAULT_PIPELINES):
            built = []
            for n, kw in dets:
                if n not in REGISTRY:
                    raise ValueError(f"unknown detector {n!r} (pattern {p!r}); "
                                     f"known: {sorted(REGISTRY)}")
                built.append(build(REGISTRY[n], dict(kw)))
            self.rules.append((p.lower(), built))
        known = _run_rule_registry()
        self.run_rule_specs = [(n, dict(kw)) for n, kw in
                               (DEFAULT_RUN_RULES if run_rules is None else run_rules)]
        self._run_rules = []
        for n, kw in self.run_rule_specs:
            if n not in known:
                raise ValueError(f"unknown run rule {n!r}; known: {sorted(known)}")
            self._run_rules.append(build(known[n], kw, "run rule"))
        self.families = [(p.lower(), f) for p, f in (families or DEFAULT_FAMILIES)]
        self._cache: dict[str, list[Detector]] = {}
        self._fallback = AlertSemantics()
        self._kinds: dict[str, AlertSemantics] = {}

    @classmethod
    def from_file(cls, path: str) -> Pipelines:
        """Pipelines from a JSON file; any fault is a ConfigError naming the file."""
        from telltale.config import ConfigError

        try:
            with open(path) as f:
                doc = json.load(f)
            metrics, run_rules, families = (doc, None, None) if isinstance(doc, list) else (
                doc.get("metrics"), doc.get("run_rules"), doc.get("families"))
            return cls(
                [(p, [tuple(d) for d in dets]) for p, dets in metrics] if metrics else None,
                [tuple(r) for r in run_rules] if run_rules is not None else None,
                [tuple(f) for f in families] if families else None)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"pipelines file {path} (TELLTALE_PIPELINES): {exc}; fix the "
                              "file or unset TELLTALE_PIPELINES for the defaults") from None

    def import_models(self) -> None:
        """Import the scikit-learn modules the detectors and run rules fit with, now (at a
        worker's start), not inside their first fit: a 1-2 s import there stalls the stream."""
        from telltale.extras import require

        for det in [d for _, dets in self.rules for d in dets] + self._run_rules:
            kind = getattr(getattr(det, "scorer", None), "kind", None)
            if kind in ("ocsvm", "iforest"):
                require("worker", f"the {det.name} detector", ("sklearn",))
            if kind == "ocsvm":
                import sklearn.svm  # noqa: F401
            elif kind == "iforest":
                import sklearn.ensemble  # noqa: F401

    def run_rules(self) -> list:
        """The run-level rules (stateless; their state lives in the run's state)."""
        return list(self._run_rules)

    def for_metric(self, metric: str) -> list[Detector]:
        dets = self._cache.get(metric)
        if dets is None:
            name = metric.lower()
            dets = next((d for p, d in self.rules if fnmatch.fnmatchcase(name, p)), [])
            if len(self._cache) < 100_000:  # metric names come from users: bounded
                self._cache[metric] = dets
        return dets

    def semantics(self, metric: str, detector: str) -> AlertSemantics:
        """The detector (or run rule) behind a finding: it owns the alert's meaning."""
        for d in self.for_metric(metric):
            if d.name == detector:
                return d
        for r in self._run_rules:
            if r.name == detector:
                return r
        sem = self._kinds.get(detector)
        if sem is None:  # a detector this configuration does not run: its kind's defaults
            cls = REGISTRY.get(detector) or _run_rule_registry().get(detector)
            sem = self._kinds[detector] = cls() if cls is not None else self._fallback
        return sem

    def family(self, metric: str, detector: str) -> str:
        """The incident family of a finding (see ``DEFAULT_FAMILIES``)."""
        if detector == "nonfinite":
            return NONFINITE_FAMILY
        name = metric.lower()
        for p, fam in self.families:
            if fnmatch.fnmatchcase(name, p):
                return fam
        return f"metric:{metric}"


@lru_cache(maxsize=1)
def default_pipelines() -> Pipelines:
    return Pipelines()
