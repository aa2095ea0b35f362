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
from telltale.detectors.nonfinite import NonFinite
from telltale.detectors.zscore import RollingZScore

REGISTRY: dict[str, type[Detector]] = {
    NonFinite.name: NonFinite,
    RollingZScore.name: RollingZScore,
    Divergence.name: Divergence,
}

DEFAULT_PIPELINES: list[tuple[str, list[tuple[str, dict]]]] = [
    # loss-like: broken values, upward spikes, sustained rise
    ("*loss*", [("nonfinite", {}),
                ("zscore", {"direction": "up", "threshold": 6.0}),
                ("divergence", {})]),
    # schedules and counters: only broken values
    ("lr", [("nonfinite", {})]),
    ("*learning_rate*", [("nonfinite", {})]),
    # everything else: broken values and large jumps either way
    ("*", [("nonfinite", {}), ("zscore", {"threshold": 8.0})]),
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
