"""The detector contract: score-then-learn over a batch of one series, explicit state.

A detector is configured by its constructor (hyper-parameters only, checked against its
``parameter_constraints``). All that it learns lives in a ``state`` dict that the caller
owns (JSON, with numpy arrays as base64: :mod:`telltale.detectors.state`), so a Faust table
or a file can hold it and a restarted worker resumes exactly. ``update`` must give the same
result whether a series arrives in one batch or one value at a time.

A detector also owns the meaning of its alerts: ``unit_score`` puts its raw score on the
one 0..1 scale every alert uses, ``abnormal`` says per value whether the series is still
abnormal in its own terms (so an incident knows when it is over), and ``resolve_after`` is
how many normal steps end an incident (0: only the end of the run does).
"""

from __future__ import annotations

import inspect
import math
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


def check_params(cls, params: dict, what: str = "detector") -> None:
    """Raise ValueError naming the parameter when ``params`` does not fit ``cls``.

    Unknown names are refused with the known ones listed; a value that breaks the class's
    ``parameter_constraints`` is refused with what it must be.
    """
    name = getattr(cls, "name", cls.__name__)
    sig = inspect.signature(cls.__init__)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    known = [p for p in sig.parameters if p != "self"
             and sig.parameters[p].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                inspect.Parameter.VAR_POSITIONAL)]
    for k, v in params.items():
        if k not in known and not takes_any:
            raise ValueError(f"{what} {name!r}: unknown parameter {k!r}; "
                             f"known: {', '.join(known) or 'none'}")
        rule = getattr(cls, "parameter_constraints", {}).get(k)
        if rule is not None and not rule.ok(v):
            raise ValueError(f"{what} {name!r}: parameter {k!r} must be {rule}, got {v!r}")


def build(cls, params: dict, what: str = "detector"):
    """An instance of ``cls`` with ``params``, checked first (see :func:`check_params`)."""
    check_params(cls, params, what)
    return cls(**params)


# -- the contract ------------------------------------------------------------------------


class AlertSemantics:
    """What a detector's score means for an alert (shared by detectors and run rules)."""

    name: str = ""
    parameter_constraints: dict = {}
    resolve_after: int = 50  # normal steps that end an incident; 0 = only the end of the run
    score_scale: float = 1.0  # raw |score| equal to this maps to 0.5 on the 0..1 scale

    def unit_score(self, score: float) -> float:
        """The raw score of a finding on the one 0..1 scale of every alert."""
        if not math.isfinite(score):
            return 1.0
        a = abs(score)
        return round(a / (a + self.score_scale), 4)

    def abnormal(self, values: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        """Per value: is the series still abnormal in this detector's terms?"""
        return np.zeros(len(values), dtype=bool)


class Detector(AlertSemantics, ABC):
    """Scores each value against what came before it, then learns it."""

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


class UnitScored(AlertSemantics):
    """Mixin for detectors whose scores are already calibrated to 0..1."""

    def unit_score(self, score: float) -> float:
        if not math.isfinite(score):
            return 1.0
        return round(min(max(float(score), 0.0), 1.0), 4)


def score_over(scores: np.ndarray, limit: float, sign: float = 0.0) -> np.ndarray:
    """Scores beyond ``limit`` (upwards with sign > 0, downwards with sign < 0, else |s|);
    NaN (no opinion) is not beyond."""
    s = np.asarray(scores, dtype=float)  # NaN compares False: no copy needed
    if sign > 0:
        return s > limit
    if sign < 0:
        return s < -limit
    return np.abs(s) > limit
