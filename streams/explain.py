"""Explanations for alerts: what, where, how far from normal, likely cause, next step.

Pure. Uses only what is the same however a run was batched: the finding's own statistics
(computed causally by its detector) and the last tumbling step windows that closed before
the finding's step. Default causes and actions are keyed by (detector, metric family);
a finding that already carries ``explanation``/``cause``/``action`` keeps them.
"""

from __future__ import annotations

import fnmatch
import math

# (metric glob, detector or "*") -> (likely cause, next step); first match wins
CAUSES: list[tuple[str, str, str, str]] = [
    ("*loss*", "nonfinite", "numerical overflow: learning rate too high, fp16 overflow without "
     "loss scaling, log(0) or a division by zero, or a corrupt batch",
     "stop the run and resume from the last finite checkpoint with a lower learning rate "
     "or gradient clipping; check the batch at this step"),
    ("val_*loss*", "*", "overfitting onset or a change in the evaluation data",
     "compare with the training loss; consider early stopping at the best checkpoint"),
    ("*loss*", "zscore", "a bad batch (corrupt or mislabelled data) or an optimizer instability",
     "inspect the batch at this step; if spikes repeat, lower the learning rate or clip "
     "gradients"),
    ("*loss*", "divergence", "learning rate too high (or a schedule/warm-up bug), exploding "
     "updates", "stop the run; restart from a checkpoint before the first step with a lower "
     "learning rate, warm-up or gradient clipping"),
    ("*grad*norm*", "nonfinite", "exploding gradients overflowed",
     "enable gradient clipping, lower the learning rate, check for log(0)/division by zero"),
    ("*grad*norm*", "*", "exploding or vanishing gradients",
     "check the learning rate and gradient clipping; look at per-layer grad_norm/<layer>"),
    ("*param*norm*", "*", "weights blowing up or collapsing (learning rate, weight decay)",
     "check learning rate and weight decay; look at per-layer param_norm/<layer>"),
    ("*update_ratio*", "*", "updates too large relative to the weights (learning rate jump)",
     "check the learning rate schedule and optimizer state"),
    ("lr", "*", "a learning-rate schedule or configuration bug",
     "check the scheduler (step counting, warm-up, restarts) and the configured lr"),
    ("*learning_rate*", "*", "a learning-rate schedule or configuration bug",
     "check the scheduler (step counting, warm-up, restarts) and the configured lr"),
    ("*step_time*", "spikerate", "data-loader stalls (slow storage, too few workers)",
     "add data-loader workers or prefetching; check storage latency"),
    ("*step_time*", "*", "a slower node, throttling or contention (CPU/GPU/IO)",
     "check the host's utilisation, temperature and other jobs on it"),
    ("*latency*", "*", "a slower backend, contention or larger requests",
     "check the model server's load, batch sizes and request sizes"),
    ("*per_s*", "*", "throughput changed: slower node, contention or a data pipeline change",
     "check the host's utilisation and the data pipeline"),
    ("*rss*", "growth", "a memory leak (tensors or graphs kept across steps)",
     "look for objects kept across steps (e.g. accumulating losses without .item())"),
    ("*mem*", "growth", "a memory leak or a growing cache",
     "look for tensors kept across steps; watch the allocator's cache"),
    ("*", "nonfinite", "a numerical overflow or a bad input",
     "check the values feeding this metric at this step"),
]


def default_cause(metric: str, detector: str) -> tuple[str, str]:
    m = metric.lower()
    for mpat, dpat, cause, action in CAUSES:
        if fnmatch.fnmatchcase(m, mpat) and (dpat == "*" or dpat == detector):
            return cause, action
    return "", ""


def _g(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _windows_before(step: int, *lists) -> list:
    """Closed windows ending at or before ``step``, oldest first (deduplicated)."""
    seen, out = set(), []
    for ws in lists:
        for w in ws or ():
            if w[7] <= step and w[0] not in seen:
                seen.add(w[0])
                out.append(w)
    out.sort(key=lambda w: w[7])
    return out


def describe(c, closed: dict, remembered: dict) -> tuple[str, str, str]:
    """(explanation, cause, action) for a candidate (metric, rank, step, value, finding).

    ``closed`` / ``remembered``: series key -> closed step windows of this batch / the last
    two before it, as ``[first_step, last_step, count, mean, std, min, max, end]``.
    """
    f = c.finding
    cause, action = f.cause, f.action
    if not (cause or action):
        cause, action = default_cause(c.metric, f.detector)
    if f.explanation:
        return f.explanation, cause, action
    key = f"{c.metric}|{c.rank}"
    where = f"{c.metric}" + (f" (rank {c.rank})" if c.rank != "0" else "")
    v = c.value
    vs = _g(v) if math.isfinite(v) else str(v)
    st = f.stats
    parts = [f"{where} {vs} at step {c.step}" if f.detector != "nonfinite"
             else f"{where} became {vs} at step {c.step}"]
    wins = _windows_before(c.step, remembered.get(key), closed.get(key))
    win = wins[-1] if wins else None
    if f.detector == "zscore" and "mean" in st and "std" in st:
        z = f.score
        side = "above" if z > 0 else "below"
        if "log scale" in f.message:
            parts.append(f"is {abs(z):.1f}σ {side} its {st.get('n', '?')}-value geometric mean "
                         f"{_g(math.exp(st['mean']))} (log scale)")
        else:
            parts.append(f"is {abs(z):.1f}σ {side} its {st.get('n', '?')}-value mean "
                         f"{_g(st['mean'])} ± {_g(st['std'])}")
    elif f.detector == "divergence" and "level" in st:
        parts.append(f": its smoothed level {_g(st['level'])} is {st['level'] / st['best']:.1f}× "
                     f"its best {_g(st['best'])} and still rising")
    elif f.detector == "levelshift" and "recent_median" in st:
        parts.append(f": recent median {_g(st['recent_median'])} is "
                     f"{st['recent_median'] / st['reference_median']:.2f}× the reference median "
                     f"{_g(st['reference_median'])}")
    elif f.detector == "nonfinite":
        parts.append("after finite values")
    elif win is not None and math.isfinite(v) and win[4] > 0:
        z = (v - win[3]) / win[4]
        parts.append(f"is {abs(z):.1f}σ {'above' if z > 0 else 'below'} its "
                     f"{win[2]}-value window mean {_g(win[3])} ± {_g(win[4])}")
    else:
        parts.append(f": {f.message}")
    if win is not None:
        parts.append(f"(steps {win[0]}–{win[1]}: mean {_g(win[3])} ± {_g(win[4])}, "
                     f"range {_g(win[5])}–{_g(win[6])})")
    text = " ".join(parts).replace(" :", ":")
    if c.metric.lower().startswith("val_"):
        train = c.metric[4:]
        tkey = f"{train}|{c.rank}"
        tw = _windows_before(c.step, remembered.get(tkey), closed.get(tkey))
        rising = f.detector != "nonfinite" and math.isfinite(v) and f.score > 0
        if rising and len(tw) >= 2 and tw[-1][3] < tw[-2][3]:
            text += (f" while {train} keeps falling ({_g(tw[-2][3])} → {_g(tw[-1][3])})")
            if not f.cause:
                cause = "overfitting onset"
                action = "consider early stopping (keep the best checkpoint so far)"
        elif rising and len(tw) >= 2 and tw[-1][3] > tw[-2][3]:
            text += (f" and {train} is rising too ({_g(tw[-2][3])} → {_g(tw[-1][3])})")
            if not f.cause:
                cause = f"the run itself is going wrong ({train} rises as well), not overfitting"
                action = f"see the run's {train} alerts; check the learning rate"
    if f.contributors:
        text += "; contributors: " + ", ".join(str(x) for x in f.contributors[:5])
    return text, cause, action
