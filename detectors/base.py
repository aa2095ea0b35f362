"""The detector contract: score-then-learn over a batch of one series, explicit state.

A detector is configured by its constructor (hyper-parameters only). All that it learns
lives in a JSON-serializable ``state`` dict that the caller owns, so a Faust table or a
file can hold it and a restarted worker resumes exactly. ``update`` must give the same
result whether a series arrives in one batch or one value at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Finding:
    """A value a detector considers anomalous (a candidate alert)."""

    index: int  # position in the batch passed to ``update``
    detector: str
    severity: str  # "info" | "warning" | "critical"
    score: float
    message: str
    stats: dict = field(default_factory=dict)
    explanation: str = ""  # what, where, how far from normal (filled in by default if empty)
    cause: str = ""  # likely cause, when the rule knows one
    action: str = ""  # suggested next step
    contributors: list = field(default_factory=list)  # metrics behind a multivariate finding


class Detector(ABC):
    """Scores each value against what came before it, then learns it."""

    name: str = ""

    def new_state(self) -> dict:
        return {}

    @abstractmethod
    def update(
        self, state: dict, steps: np.ndarray, values: np.ndarray
    ) -> tuple[np.ndarray, list[Finding]]:
        """Score ``values`` (float64, may hold NaN/Inf) in order and learn them.

        Returns one score per value (NaN where the detector has no opinion yet) and
        the findings, in order. Mutates ``state``.
        """
