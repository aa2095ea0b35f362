"""Which alerts go where: severities, states and the matchers routes (and silences) use.

A :class:`Route` sends the alerts matching all its matchers (minimum severity, run glob,
metric glob, states) to handlers named in ``to``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

SEVERITIES = ("info", "warning", "critical")
STATES = ("firing", "updated", "resolved")


def severity_at_least(a: dict, minimum: str | None) -> bool:
    """Whether alert ``a`` is at least as severe as ``minimum`` (None: any alert is)."""
    if not minimum:
        return True
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return rank.get(a.get("severity") or "", 0) >= rank[minimum]


def glob(value, pattern: str | None) -> bool:
    """``value`` matches the glob ``pattern`` (None matches everything)."""
    return pattern is None or fnmatch.fnmatchcase(str(value), pattern)


@dataclass
class Route:
    """Alerts matching every given matcher go to ``to`` (handler names)."""

    to: list[str]
    severity: str | None = None  # minimum
    run: str | None = None  # glob
    metric: str | None = None  # glob
    states: tuple[str, ...] = STATES

    def matches(self, a: dict) -> bool:
        return (severity_at_least(a, self.severity) and glob(a.get("run"), self.run)
                and glob(a.get("metric"), self.metric)
                and a.get("state", "firing") in self.states)

