"""Parameter constraints: what a detector's hyper-parameter may be, in the spirit of
scikit-learn's ``_parameter_constraints``.

A detector lists them in ``parameter_constraints`` (name -> constraint);
:func:`~telltale.detectors.base.check_params` refuses a value whose constraint's ``ok`` is
false, naming the parameter and what it must be.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import cast


@dataclass(frozen=True)
class Interval:
    """A number of ``kind`` (Integral or Real) in [lo, hi] (open where ``closed`` says)."""

    kind: type
    lo: float | None = None
    hi: float | None = None
    closed: str = "both"  # "both" | "left" | "right" | "neither"

    def ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.kind):
            return False
        if isinstance(v, float) and math.isnan(v):
            return False
        x = cast(float, v)  # an Integral or a Real: compares like a float
        lo_ok = self.lo is None or (x >= self.lo if self.closed in ("both", "left")
                                    else x > self.lo)
        hi_ok = self.hi is None or (x <= self.hi if self.closed in ("both", "right")
                                    else x < self.hi)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        what = "an integer" if self.kind is Integral else "a number"
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{what} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple

    def ok(self, v) -> bool:
        return v in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(x) for x in self.values)


POSITIVE_INT = Interval(Integral, 1)
NON_NEGATIVE_INT = Interval(Integral, 0)
POSITIVE = Interval(Real, 0, None, "neither")
NON_NEGATIVE = Interval(Real, 0)
UNIT = Interval(Real, 0, 1, "neither")  # a fraction or smoothing factor in (0, 1)
SEVERITY = Options(("info", "warning", "critical"))
DIRECTION = Options(("up", "down", "both"))
BOOL = Options((True, False))
