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
    return f"{x:.4g}" if isinstance(x, float) else str(x)


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


def _side(x: float) -> str:
    return "above" if x > 0 else "below"


def _times(r: float) -> str:
    return f"{r:.2f}×" if r < 10 else f"{r:.3g}×"


# value-based detectors: the last closed window before the step is useful context; for the
# rest (counts, quantiles, distributions, peers) a window of raw values would mislead
_WINDOW_CONTEXT = {"zscore", "robustz", "ewma", "pagehinkley", "divergence", "levelshift",
                   "spikerate", "jump", "growth", "plateau", "range"}


def _family_text(det: str, st: dict, v: float, score: float, msg: str) -> str | None:
    """What the detector saw, in its own terms (numbers from its own statistics), or None."""
    g = _g
    if det == "zscore" and "mean" in st and "std" in st:
        n = st.get("n", "?")
        if "log scale" in msg:
            return (f"is {abs(score):.1f}σ {_side(score)} its {n}-value geometric mean "
                    f"{g(math.exp(st['mean']))} (log scale)")
        return (f"is {abs(score):.1f}σ {_side(score)} its {n}-value mean {g(st['mean'])} "
                f"± {g(st['std'])}")
    if det == "robustz" and "median" in st:
        return (f"is {abs(score):.1f} robust σ {_side(score)} its {st.get('n', '?')}-value median "
                f"{g(st['median'])} (MAD-based σ {g(st['scale'])})")
    if det == "ewma" and "mean" in st:
        return (f"is {abs(score):.1f}σ {_side(score)} its exponentially weighted mean "
                f"{g(st['mean'])} ± {g(st['std'])}")
    if det == "pagehinkley" and "mean" in st:
        up = v > st["mean"]
        return (f": the level shifted {'up' if up else 'down'}: {g(v)} against a running mean of "
                f"{g(st['mean'])} (σ {g(st.get('sigma', 0.0))})")
    if det == "divergence" and "level" in st and st.get("best"):
        return (f": its smoothed level {g(st['level'])} is {_times(st['level'] / st['best'])} "
                f"its best {g(st['best'])} and has stayed above it (trend: rising, diverging)")
    if det == "levelshift" and st.get("reference_median"):
        r = st["recent_median"] / st["reference_median"]
        return (f": the median of its recent values {g(st['recent_median'])} is {_times(r)} the "
                f"median {g(st['reference_median'])} before them ({'up' if r > 1 else 'down'})")
    if det == "spikerate" and st.get("median"):
        spikes = st.get("spike_steps") or []
        where = f" (steps {', '.join(str(x) for x in spikes[-5:])})" if spikes else ""
        return (f": {len(spikes)} spikes{where} above its usual median {g(st['median'])}; the "
                f"latest, {g(v)}, is {_times(v / st['median'])} the median: repeated stalls")
    if det == "jump" and st.get("previous"):
        return (f"jumped from {g(st['previous'])} to {g(v)} in one step "
                f"({_times(v / st['previous'])} the previous value)")
    if det == "growth" and "per_step" in st:
        return (f"rose by {score:.1%} at {g(st['per_step'])} per step and kept rising: "
                "steady growth")
    if det == "plateau" and st.get("start"):
        frac = st["level"] / st["start"]
        return (f": its smoothed level {g(st['level'])} is still {frac:.0%} of where it "
                f"started ({g(st['start'])}): not improving")
    if det == "range" and "bound" in st:
        side = "above" if v > st["bound"] else "below"
        return f"is {side} the healthy bound {g(st['bound'])}"
    if det == "errorburst" and st.get("requests"):
        k, n, p0 = st["errors"], st["requests"], st.get("baseline_rate", 0.0)
        rate = k / n
        vs = (f", {_times(rate / p0)} the baseline error rate {p0:.2%}" if p0 > 0
              else f" against a baseline error rate of {p0:.2%}")
        return (f"{k} of the last {n} requests failed ({rate:.1%}){vs}; that many failures by "
                f"chance: p = {st.get('p_value', float('nan')):.2g}")
    if det == "p99" and st.get("reference"):
        r = st["recent"] / st["reference"]
        return (f"tail quantile: the p99 of the recent requests is {g(st['recent'])}, "
                f"{_times(r)} the p99 {g(st['reference'])} of the requests before them "
                f"({'slower' if r > 1 else 'faster'})")
    if det == "slo" and "fraction" in st:
        return (f"{st['fraction']:.1%} of the recent requests are above the SLO {g(st['slo'])}; "
                f"the tail quantile is {g(st['pq'])}")
    if det == "drift" and "psi" in st:
        rm, cm = st.get("reference_mean"), st.get("recent_mean")
        means = (f"; mean {g(rm)} → {g(cm)} ({'up' if cm > rm else 'down'})"
                 if rm is not None and cm is not None else "")
        return (f"its distribution moved: PSI {st['psi']:.3f}, KS {st['ks']:.3f} "
                f"(p = {st['p_value']:.2g}){means}")
    if det == "straggler" and st.get("peer_median"):
        peers = st["ranks"] - 1 if isinstance(st.get("ranks"), int) else "its"
        return (f"is {_times(st['ratio'])} the median {g(st['peer_median'])} of the other "
                f"{peers} ranks: {'slower' if st['ratio'] > 1 else 'lower'} than its peers")
    if det == "overfit" and "best" in st:
        return (f"stayed above its best {g(st['best'])} (step {st.get('best_step')}) while the "
                f"training loss fell from {g(st['train_loss_at_best'])} to "
                f"{g(st['train_loss'])}: overfitting")
    return None


def describe(c, closed: dict, remembered: dict) -> tuple[str, str, str]:
    """(explanation, cause, action) for a candidate (metric, rank, step, value, finding).

    Each detector family explains itself from its own statistics (counts and rates for
    error bursts, quantiles for p99, a trend for divergence, σ for z-scores); a window of
    the raw values is added only where it is context for a value-based detector.
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
    body = _family_text(f.detector, f.stats, v, float(f.score), f.message) \
        if math.isfinite(v) else None
    if f.detector == "nonfinite":
        parts = [f"{where} became {vs} at step {c.step} after finite values"]
    elif body is None:
        parts = [f"{where} at step {c.step}: {f.message}"]
    elif f.detector in _WINDOW_CONTEXT or f.detector in ("straggler", "overfit"):
        parts = [f"{where} {vs} at step {c.step}", body]  # body: a clause or ": ..."
    else:
        parts = [f"{where} at step {c.step}: {body}"]
    wins = _windows_before(c.step, remembered.get(key), closed.get(key))
    win = wins[-1] if wins else None
    if win is not None and f.detector in _WINDOW_CONTEXT:
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
