"""Detection pipelines per metric family, declared as data.

Each rule is ``(pattern, [(detector name, params), ...])``; the first pattern that
matches a metric name (fnmatch, case-insensitive) decides which detectors watch it.
Override with a JSON file of the same shape through ``TELLTALE_PIPELINES``.
"""

from __future__ import annotations

import fnmatch
import json
from functools import lru_cache

from telltale.detectors.base import Detector
from telltale.detectors.divergence import Divergence
from telltale.detectors.growth import Growth
from telltale.detectors.jump import Jump
from telltale.detectors.levelshift import LevelShift
from telltale.detectors.likelihood import LikelihoodEnsemble
from telltale.detectors.nonfinite import NonFinite
from telltale.detectors.spikerate import SpikeRate
from telltale.detectors.zscore import RollingZScore

REGISTRY: dict[str, type[Detector]] = {
    d.name: d for d in (NonFinite, RollingZScore, Divergence, LevelShift, SpikeRate, Jump, Growth,
                        LikelihoodEnsemble)
}

_NF = ("nonfinite", {})
_LOGZ = ("zscore", {"log": True, "threshold": 8.0})
_TIMING = [_NF, ("levelshift", {}), ("spikerate", {})]

DEFAULT_PIPELINES: list[tuple[str, list[tuple[str, dict]]]] = [
    # loss-like: broken values, upward spikes, sustained rise
    ("*loss*", [_NF, ("zscore", {"direction": "up", "threshold": 6.0}), ("divergence", {})]),
    # learning rate: schedules move it smoothly; a ×10 jump in one step is a fault
    ("lr", [_NF, ("jump", {})]),
    ("*learning_rate*", [_NF, ("jump", {})]),
    # norms and ratios: multiplicative, so z-scores on a log scale
    ("*grad*norm*", [_NF, _LOGZ]),
    ("*param*norm*", [_NF, _LOGZ]),
    ("*weight*norm*", [_NF, _LOGZ]),
    ("*update_ratio*", [_NF, ("jump", {"severity": "warning"})]),
    # timing and throughput: heavy-tailed; sustained shifts and repeated stalls
    ("*step_time*", _TIMING),
    ("*latency*", _TIMING),
    ("*duration*", _TIMING),
    ("*per_s*", [_NF, ("levelshift", {})]),
    ("*throughput*", [_NF, ("levelshift", {})]),
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


class Pipelines:
    """Maps a metric name to its detectors (instances are shared; state is not)."""

    def __init__(self, rules=None):
        self.rules = [(p.lower(), [(n, dict(kw)) for n, kw in dets])
                      for p, dets in (rules or DEFAULT_PIPELINES)]
        for _, dets in self.rules:
            for n, _ in dets:
                if n not in REGISTRY:
                    raise ValueError(f"unknown detector {n!r}; known: {sorted(REGISTRY)}")
        self._cache: dict[str, list[Detector]] = {}

    @classmethod
    def from_file(cls, path: str) -> Pipelines:
        with open(path) as f:
            return cls([(p, [tuple(d) for d in dets]) for p, dets in json.load(f)])

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
