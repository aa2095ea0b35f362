"""Tumbling and hopping window statistics (count, mean, std, min, max) by step or by time.

Windows are aligned to multiples of ``hop`` on the step number or on event time (Unix
seconds) and close when the series reaches their end. Statistics use finite values only;
std is the population std (numpy's default, ddof=0). Batches are merged with Chan's
parallel update, so one batch or many give the same result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import floor, isfinite

import numpy as np

_SPEC = re.compile(r"^(step|time):(\d+(?:\.\d+)?)(s|m|h)?(?:/(\d+(?:\.\d+)?)(s|m|h)?)?$")
_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """``step:100`` (tumbling, 100 steps), ``step:100/50`` (hopping), ``time:60s``."""

    by: str  # "step" | "time"
    size: float
    hop: float

    @classmethod
    def parse(cls, text: str) -> WindowSpec:
        m = _SPEC.match(text.strip())
        if not m:
            raise ValueError(f"bad window {text!r}: use step:SIZE[/HOP] or time:SIZE[s|m|h][/HOP]")
        by, size, su, hop, hu = m.groups()
        if by == "step" and (su or hu):
            raise ValueError(f"bad window {text!r}: step windows take no time unit")
        size = float(size) * _UNIT[su]
        hop = float(hop) * _UNIT[hu] if hop else size
        if size <= 0 or hop <= 0 or hop > size:
            raise ValueError(f"bad window {text!r}: need 0 < hop <= size")
        if by == "step" and (size != int(size) or hop != int(hop)):
            raise ValueError(f"bad window {text!r}: step sizes are whole numbers")
        return cls(by, size, hop)

    @property
    def label(self) -> str:
        def f(x):
            return f"{x:g}" + ("s" if self.by == "time" else "")
        core = f"{self.by}:{f(self.size)}"
        return core if self.hop == self.size else f"{core}/{f(self.hop)}"

    @property
    def tumbling(self) -> bool:
        return self.hop == self.size


@dataclass(slots=True)
class WindowResult:
    spec: str
    start: float
    end: float
    count: int
    mean: float
    std: float
    min: float
    max: float
    first_step: int
    last_step: int
    first_ts: float
    last_ts: float
    hop: float


# accumulator layout: [count, mean, m2, min, max, first_step, last_step, first_ts, last_ts]

SMALL_BATCH = 32  # a series' batch up to this many values is reduced in Python


def _empty() -> list:
    return [0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0.0, 0.0]


def _advance(state: dict, pos: float) -> None:
    """The series has reached ``pos`` (windows ending by then close)."""
    state["pos"] = pos if state["pos"] is None else max(state["pos"], pos)


def _merge(acc: list, n, mean, m2, lo, hi, s0, s1, t0, t1) -> None:
    na = acc[0]
    if na == 0:
        acc[:] = [n, mean, m2, lo, hi, s0, s1, t0, t1]
        return
    tot = na + n
    delta = mean - acc[1]
    acc[1] = acc[1] + delta * n / tot
    acc[2] = acc[2] + m2 + delta * delta * na * n / tot
    acc[0] = tot
    acc[3] = min(acc[3], lo)
    acc[4] = max(acc[4], hi)
    acc[6], acc[8] = s1, t1


def _reduce(xs, first, cnt, s, t):
    """(count, mean, m2, min, max, first/last step, first/last ts) of consecutive groups."""
    mu = np.add.reduceat(xs, first) / cnt
    d = xs - np.repeat(mu, cnt)
    m2 = np.add.reduceat(d * d, first)
    lo, hi = np.minimum.reduceat(xs, first), np.maximum.reduceat(xs, first)
    i0, i1 = first, first + cnt - 1
    return zip(cnt.tolist(), mu.tolist(), m2.tolist(), lo.tolist(), hi.tolist(),
               s[i0].tolist(), s[i1].tolist(), t[i0].tolist(), t[i1].tolist(), strict=True)


class WindowStats:
    """Keeps the open windows of one series in a JSON-able state dict.

    >>> win = WindowStats(WindowSpec.parse("step:4"))
    >>> state = win.new_state()
    >>> steps = np.arange(1, 11)
    >>> closed = win.update(state, steps, steps * 1.0, steps * 1.0)
    >>> [(w.start, w.end, w.count, w.mean) for w in closed]
    [(0.0, 4.0, 3, 2.0), (4.0, 8.0, 4, 5.5)]
    """

    def __init__(self, spec: WindowSpec):
        self.spec = spec

    def new_state(self) -> dict:
        return {"open": {}, "pos": None}  # window start (as str) -> accumulator

    def update(self, state: dict, steps: np.ndarray, ts: np.ndarray,
               values: np.ndarray) -> list[WindowResult]:
        """Add a batch; return the windows it closed, oldest first."""
        sp = self.spec
        if len(values) <= SMALL_BATCH and sp.size % sp.hop == 0 and self._add_small(
                state, steps, ts, values):
            return self._close(state, lambda start: start + sp.size <= state["pos"])
        pos = steps.astype(float) if sp.by == "step" else ts.astype(float)
        fin = np.isfinite(values)
        opened = state["open"]
        if fin.all():
            p, v, s, t = pos, values, steps, ts
        else:
            p, v, s, t = pos[fin], values[fin], steps[fin], ts[fin]
        if len(p):
            if sp.size % sp.hop == 0 and np.floor(p.min() / sp.hop) == np.floor(p.max() / sp.hop):
                self._add_one_hop(opened, float(np.floor(p[0] / sp.hop)), v, s, t)
            else:
                bucket = np.floor(p / sp.hop)
                if sp.size % sp.hop == 0 and (bucket[1:] >= bucket[:-1]).all():
                    self._add_by_hop(opened, bucket, v, s, t)
                else:
                    self._add_general(opened, p, v, s, t)
        if len(pos):
            _advance(state, float(np.nanmax(pos)))
        return self._close(state, lambda start: start + sp.size <= state["pos"])

    def _add_small(self, state: dict, steps, ts, values) -> bool:
        """A small batch in Python (numpy's cost per call exceeds the work): statistics per
        hop as :meth:`_add_by_hop` computes them. False, and nothing changed, if its
        positions are out of order."""
        hop = self.spec.hop
        pos = (steps if self.spec.by == "step" else ts).tolist()
        v, s, t = values.tolist(), steps.tolist(), ts.tolist()
        groups: list[list] = []  # [bucket, values, first/last step, first/last ts]
        last = None
        for i, x in enumerate(v):
            if not isfinite(x):
                continue
            b = floor(pos[i] / hop)
            if b == last:
                g = groups[-1]
                g[1].append(x)
                g[3], g[5] = s[i], t[i]
            elif last is not None and b < last:
                return False
            else:
                groups.append([b, [x], s[i], s[i], t[i], t[i]])
                last = b
        for b, xs, s0, s1, t0, t1 in groups:
            n = len(xs)
            mu = sum(xs) / n
            self._merge_hop(state["open"], float(b) * hop, (
                n, mu, sum((x - mu) * (x - mu) for x in xs), min(xs), max(xs),
                s0, s1, t0, t1))
        if pos:
            _advance(state, float(max(pos)))
        return True

    def _merge_hop(self, opened: dict, start: float, row: tuple) -> None:
        """Merge one hop's statistics (starting at ``start``) into the size/hop windows
        that contain it."""
        hop = self.spec.hop
        for j in range(int(self.spec.size // hop)):
            _merge(opened.setdefault(repr(start - j * hop), _empty()), *row)

    def _add_one_hop(self, opened: dict, bucket: float, v, s, t) -> None:
        """The whole batch in one hop (the usual case): :meth:`_add_by_hop` for one group,
        the same arithmetic without the grouping."""
        first = np.zeros(1, dtype=np.intp)
        mu = np.add.reduceat(v, first) / len(v)
        d = v - mu
        row = (len(v), float(mu[0]), float(np.add.reduceat(d * d, first)[0]), float(v.min()),
               float(v.max()), int(s[0]), int(s[-1]), float(t[0]), float(t[-1]))
        self._merge_hop(opened, bucket * self.spec.hop, row)

    def _add_by_hop(self, opened: dict, bucket, v, s, t) -> None:
        """Positions in order and windows a whole number of hops: statistics per hop, each
        merged into the size/hop windows that contain it."""
        hop = self.spec.hop
        first = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
        first = np.concatenate(([0], first))
        cnt = np.diff(np.append(first, len(v)))
        rows = _reduce(v, first, cnt, s, t)
        for start, row in zip((bucket[first] * hop).tolist(), rows, strict=True):
            self._merge_hop(opened, start, row)

    def _add_general(self, opened: dict, p, v, s, t) -> None:
        sp = self.spec
        per = int(np.ceil(sp.size / sp.hop))
        base = np.floor(p / sp.hop) * sp.hop
        starts_by_j, idx_by_j = [], []
        for j in range(per):
            st = base - j * sp.hop
            ok = p < st + sp.size
            starts_by_j.append(st[ok])
            idx_by_j.append(np.flatnonzero(ok))
        starts = np.concatenate(starts_by_j)
        idx = np.concatenate(idx_by_j)
        order = np.lexsort((idx, starts))
        starts, idx = starts[order], idx[order]
        uniq, first = np.unique(starts, return_index=True)
        # the values grouped by window, reduced per group
        cnt = np.diff(np.append(first, len(starts)))
        rows = _reduce(v[idx], first, cnt, s[idx], t[idx])
        for w, row in zip(uniq.tolist(), rows, strict=True):
            _merge(opened.setdefault(repr(w), _empty()), *row)

    def flush(self, state: dict) -> list[WindowResult]:
        """Close every open window (at the end of a run)."""
        return self._close(state, lambda start: True)

    def _close(self, state, done) -> list[WindowResult]:
        out: list[WindowResult] = []
        if state["pos"] is None:
            return out
        for key in sorted(state["open"], key=float):
            start = float(key)
            if not done(start):
                continue
            n, mu, m2, lo, hi, s0, s1, t0, t1 = state["open"].pop(key)
            if lo == hi:  # a constant window: exactly, whatever rounding the merges left
                mu, m2 = lo, 0.0
            out.append(WindowResult(self.spec.label, start, start + self.spec.size, int(n),
                                    mu, (m2 / n) ** 0.5, lo, hi, s0, s1, t0, t1,
                                    self.spec.hop))
        return out
