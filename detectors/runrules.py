"""Run-level rules: detectors that look across a run's series (metrics and ranks).

Same contract as :class:`~telltale.detectors.base.Detector`, one level up: hyper-parameters
in the constructor, everything learned in a JSON-serializable ``state``; ``update`` sees one
batch of a run (every series that got values, with each value's position ``seq`` in the
batch so rules can interleave series in event order) and returns findings placed on one
series. Results do not depend on how the run's events were batched.
"""

from __future__ import annotations

import fnmatch
import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from numbers import Real

import numpy as np

from telltale.detectors import constraints
from telltale.detectors.base import AlertSemantics, Finding


@dataclass(slots=True)
class SeriesBatch:
    """One series' values in a batch: aligned arrays, in event order."""

    metric: str
    rank: str
    kind: str
    steps: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    seq: np.ndarray  # position of each value's event in the batch
    host: str = ""  # the series' host tag, when its events carry one


@dataclass(slots=True)
class RuleFinding:
    """A finding placed on one series, at one of its steps."""

    metric: str
    rank: str
    step: int
    ts: float
    value: float
    finding: Finding


class RunRule(AlertSemantics, ABC):
    """A rule over a run's series; it owns its alert semantics like a detector does."""

    resolve_after = 0  # run rules give no per-step signal of being normal: the run's end

    def new_state(self) -> dict:
        return {}

    @abstractmethod
    def update(self, state: dict, batch: dict[str, SeriesBatch],
               scores: list | None = None) -> list[RuleFinding]:
        """Learn one batch of a run (``batch`` is keyed ``"metric|rank"``); mutates state.

        A rule that scores steps appends ``(series, rank, step, ts, name, score)`` rows to
        ``scores`` (when given) for the run's score points."""


def _merge(series: list[SeriesBatch]) -> list[tuple[int, int, float, float, SeriesBatch]]:
    """(seq, step, value, ts, series) of several series, in event order."""
    rows = []
    for s in series:
        for q, st, v, t in zip(s.seq.tolist(), s.steps.tolist(), s.values.tolist(),
                               s.ts.tolist(), strict=True):
            rows.append((q, st, v, t, s))
    rows.sort(key=lambda r: r[0])
    return rows


class Overfit(RunRule):
    """Overfitting, stated in evaluation points: the validation loss has stayed above
    ``(1 + rel)`` × its best + ``abs_`` for ``patience`` evaluations in a row, while the
    training loss kept improving (its EWMA now below its EWMA at the validation best) and
    the model does worse on validation than on training data by the same margin (a
    generalisation gap: a validation loss below the training loss is noise, not memorising).

    The margin is the usual early-stopping sense of "worse than the best", relative to the
    loss's own level; ``patience`` is the evidence count (two evaluations, so one noisy
    evaluation never fires). Nothing depends on how often the run evaluates.

    >>> def series(metric, kind, steps, values):
    ...     return SeriesBatch(metric, "0", kind, steps, steps * 1.0, values, steps)
    >>> train = series("loss", "train", np.arange(1, 61), np.linspace(1.0, 0.1, 60))
    >>> val = series("val_loss", "eval", np.arange(10, 61, 10),
    ...              np.array([0.9, 0.6, 0.5, 0.8, 0.9, 1.0]))  # best at step 30
    >>> rule = Overfit()
    >>> found = rule.update(rule.new_state(), {"loss|0": train, "val_loss|0": val})
    >>> [(f.metric, f.step) for f in found]
    [('val_loss', 50)]
    """

    name = "overfit"
    parameter_constraints = {"rel": constraints.Interval(Real, 0),
                             "abs_": constraints.Interval(Real, 0),
                             "patience": constraints.POSITIVE_INT, "alpha": constraints.UNIT,
                             "severity": constraints.SEVERITY}
    score_scale = 0.25

    def __init__(self, val_patterns=("val*loss", "eval*loss", "validation*loss"),
                 train_patterns=("loss", "train*loss"), rel: float = 0.25, abs_: float = 0.02,
                 patience: int = 2, alpha: float = 0.1, severity: str = "warning"):
        self.val_patterns, self.train_patterns = val_patterns, train_patterns
        self.rel, self.abs_, self.patience = rel, abs_, patience
        self.alpha, self.severity = alpha, severity

    def new_state(self) -> dict:
        return {"ema": None, "best": None, "best_step": None, "best_train": None,
                "streak": 0, "active": False}

    def update(self, state, batch, scores=None):
        val = [s for s in batch.values() if _match(s.metric, self.val_patterns)]
        train = [s for s in batch.values()
                 if s.kind == "train" and _match(s.metric, self.train_patterns)]
        if not val and not train:
            return []
        out = []
        a = self.alpha
        is_train = {id(t) for t in train}
        for _q, step, x, ts, s in _merge(val + train):
            if not math.isfinite(x):
                continue
            if id(s) in is_train:
                ema = state["ema"]
                state["ema"] = x if ema is None else ema + a * (x - ema)
                continue
            ema, best = state["ema"], state["best"]
            if best is None or x < best:
                state.update(best=x, best_step=step, best_train=ema, streak=0)
                continue
            bound = (1 + self.rel) * best + self.abs_
            improving = (ema is not None and state["best_train"] is not None
                         and ema < state["best_train"])
            gap = ema is not None and x > (1 + self.rel) * ema + self.abs_
            if x > bound and improving and gap:
                state["streak"] += 1
                if state["streak"] >= self.patience and not state["active"]:
                    state["active"] = True
                    rise = (x - best) / max(abs(best), 1e-12)
                    out.append(RuleFinding(s.metric, s.rank, step, ts, x, Finding(
                        0, self.name, self.severity, rise,
                        f"{x:.4g} has stayed above {bound:.4g} (best {best:.4g} at step "
                        f"{state['best_step']}) for {state['streak']} evaluations while the "
                        f"training loss fell to {ema:.4g} (from {state['best_train']:.4g}): "
                        "overfitting", {"best": best, "best_step": state["best_step"],
                                        "train_loss": ema, "train_loss_at_best":
                                        state["best_train"]},
                        explanation=(
                            f"{s.metric} {x:.4g} at step {step} is {rise:.0%} above its best "
                            f"{best:.4g} (step {state['best_step']}) for {state['streak']} "
                            f"evaluations in a row, while the training loss kept falling "
                            f"({state['best_train']:.4g} → {ema:.4g})"),
                        cause="the model is memorising the training data "
                              "(validation loss rising while training loss falls)",
                        action="consider early stopping at the best checkpoint, more data or "
                               "augmentation, or stronger regularisation",
                        contributors=[s.metric, *sorted({t.metric for t in train})])))
            else:
                state["streak"] = 0
                if x <= bound:
                    state["active"] = False
        return out


class Straggler(RunRule):
    """One rank's step time above ``ratio`` × the median of its peers for ``patience``
    steps in a row (runs with at least ``min_ranks`` ranks).

    >>> def series(rank, seconds):  # one rank's step times at steps 1..20
    ...     seq = 3 * np.arange(20) + int(rank)  # each value's position in the batch
    ...     steps = np.arange(1, 21)
    ...     return SeriesBatch("step_time", rank, "train", steps, np.zeros(20), seconds, seq)
    >>> batch = {f"step_time|{r}": series(r, np.full(20, 2.0 if r == "2" else 1.0)) for r in "012"}
    >>> rule = Straggler(patience=3)
    >>> [(f.rank, f.step, f.finding.message) for f in rule.update(rule.new_state(), batch)]
    [('2', 4, 'of rank 2 is 2.00× the median of its 2 peers (2 vs 1) for 3 steps: straggler')]
    """

    name = "straggler"
    parameter_constraints = {"ratio": constraints.Interval(Real, 1, None, "neither"),
                             "patience": constraints.POSITIVE_INT,
                             "min_ranks": constraints.Interval(Real, 2),
                             "max_pending": constraints.POSITIVE_INT,
                             "severity": constraints.SEVERITY}
    score_scale = 0.5

    def __init__(self, patterns=("*step_time*",), ratio: float = 1.5, patience: int = 5,
                 min_ranks: int = 3, max_pending: int = 16, severity: str = "warning"):
        self.patterns, self.ratio, self.patience = patterns, ratio, patience
        self.min_ranks, self.max_pending, self.severity = min_ranks, max_pending, severity

    def new_state(self) -> dict:
        # per metric: known ranks, steps waiting for all ranks, per-rank streaks
        return {"m": {}}

    def update(self, state, batch, scores=None):
        out: list[RuleFinding] = []
        by_metric: dict[str, list[SeriesBatch]] = {}
        for s in batch.values():
            if _match(s.metric, self.patterns):
                by_metric.setdefault(s.metric, []).append(s)
        for metric, series in sorted(by_metric.items()):
            st = state["m"].setdefault(metric, {"ranks": [], "pending": {}, "streak": {},
                                                "active": {}})
            hosts = st.setdefault("hosts", {})
            for _q, step, x, ts, s in _merge(series):
                if s.rank not in st["ranks"]:
                    st["ranks"].append(s.rank)
                if s.host and s.rank not in hosts:
                    hosts[s.rank] = s.host
                if not (math.isfinite(x) and x > 0):
                    continue
                st["pending"].setdefault(str(step), {})[s.rank] = [x, ts]
                self._drain(st, metric, out)
        return out

    def _drain(self, st, metric, out) -> None:
        pending = st["pending"]
        n = len(st["ranks"])
        for key in sorted(pending, key=int):
            vals = pending[key]
            if len(vals) < n and len(pending) <= self.max_pending:
                break  # wait for the other ranks of this step
            del pending[key]
            if len(vals) < self.min_ranks:
                continue
            step = int(key)
            for rank, (x, ts) in vals.items():
                peers = [v for r, (v, _) in vals.items() if r != rank]
                med = float(np.median(peers))
                r = x / med if med > 0 else math.inf
                if r > self.ratio:
                    st["streak"][rank] = st["streak"].get(rank, 0) + 1
                else:
                    st["streak"][rank] = 0
                    if r < (1 + self.ratio) / 2:
                        st["active"].pop(rank, None)
                if st["streak"][rank] >= self.patience and not st["active"].get(rank):
                    st["active"][rank] = True
                    host = st.get("hosts", {}).get(rank, "")
                    on = f" on {host}" if host else ""
                    out.append(RuleFinding(metric, rank, step, ts, x, Finding(
                        0, self.name, self.severity, r - 1,
                        f"of rank {rank}{on} is {r:.2f}× the median of its {len(peers)} peers "
                        f"({x:.4g} vs {med:.4g}) for {st['streak'][rank]} steps: straggler",
                        {"ratio": r, "peer_median": med, "ranks": len(vals), "host": host},
                        explanation=(
                            f"rank {rank}{on} is the straggler: its {metric} {x:.4g} at step "
                            f"{step} is {r:.2f}× the median {med:.4g} of the other "
                            f"{len(peers)} ranks, for {st['streak'][rank]} steps in a row"),
                        cause=f"rank {rank}{on} is slower than the others (its host or device, "
                              "data loading or a noisy neighbour); every rank waits for it",
                        action=f"check {host or f'the host of rank {rank}'}: CPU/GPU load, "
                               "throttling, I/O and data-loader workers",
                        contributors=[metric, f"rank {rank}", *([f"host {host}"] if host
                                                                 else [])])))


class WeightsJump(RunRule):
    """The weights changed by more than the optimizer moved them.

    By the triangle inequality a step changes the weight norm by at most the update's own
    norm: |‖w_t‖ - ‖w_(t-1)‖| ≤ ‖w_t - w_(t-1)‖ = update_ratio_t × ‖w_(t-1)‖. A change of
    the norm more than ``tolerance`` × that bound between consecutive steps cannot come from
    the optimizer: weights were overwritten or rescaled outside it (a layer exploding or
    vanishing, a bad checkpoint load, weight surgery), or the two metrics are logged
    inconsistently. Needs both metrics on consecutive steps; no threshold is fitted.

    >>> steps = np.arange(1, 6)
    >>> norm = np.array([10.0, 10.01, 10.02, 8.0, 8.01])  # a 20% drop in one step
    >>> batch = {m: SeriesBatch(m, "0", "train", steps, steps * 1.0, v, steps)
    ...          for m, v in (("param_norm", norm), ("update_ratio", np.full(5, 0.001)))}
    >>> rule = WeightsJump()
    >>> [(f.step, f.finding.message) for f in rule.update(rule.new_state(), batch)]
    [(4, "changed -20.2% in one step (10.02 → 8), 201.6× more than the optimizer's update could move
    it (update_ratio 0.001)")]
    """

    name = "weights"
    parameter_constraints = {"tolerance": constraints.Interval(Real, 1),
                             "cooldown": constraints.NON_NEGATIVE_INT,
                             "severity": constraints.SEVERITY}
    resolve_after = 20
    score_scale = 4.0

    def __init__(self, norm_patterns=("param_norm", "weight_norm", "param*norm"),
                 ratio_patterns=("update_ratio", "*update*ratio*"), tolerance: float = 2.0,
                 cooldown: int = 50, severity: str = "critical"):
        self.norm_patterns, self.ratio_patterns = norm_patterns, ratio_patterns
        self.tolerance, self.cooldown, self.severity = tolerance, cooldown, severity

    def new_state(self) -> dict:
        return {"ranks": {}}

    def update(self, state, batch, scores=None):
        norms = {s.rank: s for s in batch.values() if _match(s.metric, self.norm_patterns)}
        ratios = {s.rank: s for s in batch.values() if _match(s.metric, self.ratio_patterns)}
        out = []
        for rank in sorted(norms.keys() & ratios.keys()):
            ns, rs = norms[rank], ratios[rank]
            ratio_at = dict(zip(rs.steps.tolist(), rs.values.tolist(), strict=True))
            st = state["ranks"].setdefault(rank, {"prev": None, "last": None})
            for step, x, ts in zip(ns.steps.tolist(), ns.values.tolist(), ns.ts.tolist(),
                                   strict=True):
                prev, st["prev"] = st["prev"], [step, x]
                u = ratio_at.get(step)
                if (prev is None or step != prev[0] + 1 or u is None
                        or not all(math.isfinite(v) and v > 0 for v in (x, prev[1], u))):
                    continue
                bound = u * prev[1]
                excess = abs(x - prev[1]) / bound
                if excess <= self.tolerance or (st["last"] is not None
                                                and step - st["last"] <= self.cooldown):
                    continue
                st["last"] = step
                change = x / prev[1] - 1
                out.append(RuleFinding(ns.metric, rank, step, ts, x, Finding(
                    0, self.name, self.severity, excess,
                    f"changed {change:+.1%} in one step ({prev[1]:.4g} → {x:.4g}), {excess:.1f}× "
                    f"more than the optimizer's update could move it ({rs.metric} {u:.3g})",
                    {"previous": prev[1], "update_ratio": u, "excess": excess},
                    explanation=(
                        f"{ns.metric} went from {prev[1]:.4g} to {x:.4g} at step {step} "
                        f"({change:+.1%}); the optimizer's update was {u:.3g} of the weights, "
                        f"so it can change their norm by at most {bound:.3g}: the change is "
                        f"{excess:.1f}× that"),
                    cause="weights changed outside the optimizer step: a layer exploding or "
                          "vanishing, a checkpoint or weights loaded mid-run, or a bug that "
                          "rescales parameters",
                    action="check what touched the model at this step (hooks, weight loading, "
                           "in-place ops on parameters); look at per-layer param_norm",
                    contributors=[ns.metric, rs.metric])))
        return out


def _match(name: str, patterns) -> bool:
    """Does ``name`` (case-insensitively) match one of the glob ``patterns``? Cached: the
    rules ask for every series of every batch."""
    return _match_tuple(name, patterns if type(patterns) is tuple else tuple(patterns))


@functools.lru_cache(maxsize=4096)
def _match_tuple(name: str, patterns: tuple) -> bool:
    n = name.lower()
    return any(fnmatch.fnmatchcase(n, p) for p in patterns)


RULES: dict[str, type[RunRule]] = {r.name: r for r in (Overfit, Straggler, WeightsJump)}
