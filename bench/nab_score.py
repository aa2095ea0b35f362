"""Numenta Anomaly Benchmark (NAB) scoring, reimplemented from NAB's published code and paper.

    python bench/nab_score.py --nab NAB_ROOT --scores DIR         # DIR/<category>/<file>.csv
    python bench/nab_score.py --nab NAB_ROOT --baseline zscore    # or null / perfect

``NAB_ROOT`` has NAB's layout: ``data/<category>/<file>.csv`` (timestamp,value) and
``labels/combined_windows.json``. A scores file has the columns timestamp,value,anomaly_score
(the leading columns of NAB's results files), one row per data row, in the same order.

Scoring follows numenta/NAB ``nab/sweeper.py`` (``Sweeper.calcSweepScore``,
``calcScoreByThreshold``), ``nab/optimizer.py``, ``nab/runner.py`` (``normalize``),
``nab/util.py`` (``getProbationPeriod``) and ``config/profiles.json``:

- rows before ``min(floor(0.15 * n), 0.15 * 5000)`` are probationary and ignored entirely;
- a row is a detection when ``anomaly_score >= threshold``;
- ``S(x) = 2 / (1 + exp(5x)) - 1``, and ``-1`` for ``x > 3``;
- a window (rows ``a..b``, width ``w = b - a + 1``) scores ``tpWeight * S(-(b - i + 1) / w) /
  S(-1)`` for its earliest detection ``i`` (so a detection on its first row scores exactly
  ``tpWeight``), and ``-fnWeight`` when missed;
- a detection outside every window scores ``fpWeight * S((i - b) / (w - 1))`` relative to the
  closest preceding window (``a..b``), and ``-fpWeight`` when no window precedes it;
- one threshold per profile, the one maximising the raw score summed over the corpus, is chosen
  among all distinct anomaly scores (plus "flag nothing"); ties go to the highest threshold;
- normalised score = ``100 * (raw - null) / (perfect - null)``, with null = the raw score of
  flagging nothing and perfect = number of labelled windows x ``tpWeight``.

Counts reported: ``tp`` / ``fn`` = windows detected / missed, ``fp`` = false-positive rows
(NAB's own results files count rows for all four).

Importing this module has no side effects; the CLI lives in ``main``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0},
}
PROBATION_PERCENT = 0.15
NOTHING = math.inf  # the threshold that flags no row


@dataclass
class Series:
    """One NAB data file: rows in file order, windows as inclusive row-index ranges."""

    name: str
    timestamps: np.ndarray  # datetime64[s]
    values: np.ndarray
    windows: list[tuple[int, int]]
    probation: int


def scaled_sigmoid(x):
    """NAB's ``scaledSigmoid``: 2/(1+exp(5x)) - 1, and -1 beyond x = 3."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, out)


MAX_TP = float(scaled_sigmoid(-1.0))


def probation_length(n: int, percent: float = PROBATION_PERCENT) -> int:
    """NAB's ``getProbationPeriod``: min(floor(percent * n), percent * 5000), as a row count."""
    return math.ceil(min(math.floor(percent * n), percent * 5000))


def make_series(name: str, timestamps, values, window_limits) -> Series:
    """Build a Series; row i is in window (start, end) when start <= ts_i <= end."""
    ts = np.asarray(timestamps, dtype="datetime64[s]")
    windows = []
    for start, end in window_limits:
        rows = np.flatnonzero((ts >= np.datetime64(start, "s")) & (ts <= np.datetime64(end, "s")))
        if rows.size == 0:
            raise ValueError(f"{name}: window {start}..{end} holds no row")
        if rows[-1] - rows[0] + 1 != rows.size:
            raise ValueError(f"{name}: window {start}..{end} is not a contiguous run of rows")
        windows.append((int(rows[0]), int(rows[-1])))
    windows.sort()
    for (_, b), (a, _) in pairwise(windows):
        if a <= b:
            raise ValueError(f"{name}: overlapping windows")
    return Series(name, ts, np.asarray(values, dtype=float), windows, probation_length(ts.size))


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def load_corpus(nab_root) -> list[Series]:
    """Load every labelled data file under ``nab_root`` (sorted by name)."""
    root = Path(nab_root)
    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    corpus = []
    for name in sorted(labels):
        _, rows = _read_csv(root / "data" / name)
        ts = np.array([r[0] for r in rows], dtype="datetime64[s]")
        values = np.array([float(r[1]) for r in rows])
        corpus.append(make_series(name, ts, values, labels[name]))
    return corpus


def _row_weights(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row: window index (-1 outside) and NAB's unweighted credit (TP) or cost (FP)."""
    n = series.timestamps.size
    idx = np.arange(n)
    win = np.full(n, -1)
    credit = np.full(n, -1.0)  # FP with no preceding window
    for k, (a, b) in enumerate(series.windows):
        width = b - a + 1
        win[a:b + 1] = k
        credit[a:b + 1] = scaled_sigmoid(-(b - idx[a:b + 1] + 1) / width) / MAX_TP
        nxt = series.windows[k + 1][0] if k + 1 < len(series.windows) else n
        # NAB divides by zero here for a one-row window; treat its width - 1 as 1.
        credit[b + 1:nxt] = scaled_sigmoid((idx[b + 1:nxt] - b) / max(width - 1, 1))
    return win, credit


def score_series(series: Series, scores, threshold: float, weights: dict) -> dict:
    """Raw NAB score of one file at a fixed threshold (no sweep)."""
    scores = np.asarray(scores, dtype=float)
    win, credit = _row_weights(series)
    hit = (scores >= threshold) & (np.arange(scores.size) >= series.probation)
    fp_rows = hit & (win < 0)
    raw = weights["fpWeight"] * credit[fp_rows].sum()
    tp = fn = 0
    for a, b in series.windows:
        if b < series.probation:
            continue  # wholly probationary: NAB never scores it
        rows = np.flatnonzero(hit[a:b + 1])
        if rows.size:
            tp += 1
            raw += weights["tpWeight"] * credit[a + rows[0]]
        else:
            fn += 1
            raw -= weights["fnWeight"]
    return {"raw": float(raw), "tp": tp, "fn": fn, "fp": int(fp_rows.sum())}


def _sweep(scores: np.ndarray, win: np.ndarray, credit: np.ndarray, n_windows: int,
           weights: dict) -> dict:
    """Best corpus-wide threshold: NAB's ``calcScoreByThreshold`` + ``optimizeThreshold``."""
    order = np.argsort(-scores, kind="stable")
    s, w, c = scores[order], win[order], credit[order]
    fp = np.where(w < 0, weights["fpWeight"] * c, 0.0)
    # A window's part is the best credit among its detected rows, -fnWeight while none is.
    gain = np.zeros(s.size)
    for k in np.unique(w[w >= 0]):
        pos = np.flatnonzero(w == k)
        best = np.maximum.accumulate(
            np.concatenate(([-weights["fnWeight"]], weights["tpWeight"] * c[pos])))
        gain[pos] = np.diff(best)
    total = -weights["fnWeight"] * n_windows + np.concatenate(([0.0], np.cumsum(fp + gain)))
    # total[j] = score with the top j rows flagged; valid cuts fall between distinct scores.
    cuts = np.concatenate(([0], np.flatnonzero(np.diff(s) != 0) + 1, [s.size]))
    cuts = np.unique(cuts)
    j = int(cuts[np.argmax(total[cuts])])
    detected = np.unique(w[:j][w[:j] >= 0]).size
    return {"raw": float(total[j]), "threshold": float(s[j - 1]) if j else NOTHING,
            "tp": detected, "fn": n_windows - detected, "fp": int((w[:j] < 0).sum())}


def score_corpus(corpus: list[Series], scores_by_name: dict, profiles=PROFILES) -> dict:
    """NAB score of a detector over a corpus, per profile (threshold swept per profile)."""
    parts, n_windows, n_scorable = [], 0, 0
    for series in corpus:
        scores = np.asarray(scores_by_name[series.name], dtype=float)
        if scores.shape != series.values.shape:
            raise ValueError(f"{series.name}: {scores.size} scores for {series.values.size} rows")
        if np.isnan(scores).any():
            raise ValueError(f"{series.name}: NaN anomaly score")
        win, credit = _row_weights(series)
        keep = np.arange(scores.size) >= series.probation
        win = np.where(win >= 0, win + n_windows, -1)  # corpus-wide window ids
        parts.append((scores[keep], win[keep], credit[keep]))
        n_windows += len(series.windows)
        # A window wholly in the probationary period is never scored (but counts in perfect).
        n_scorable += sum(b >= series.probation for _, b in series.windows)
    scores, win, credit = (np.concatenate(p) for p in zip(*parts, strict=True))
    out = {}
    for profile, weights in profiles.items():
        best = _sweep(scores, win, credit, n_scorable, weights)
        null = -weights["fnWeight"] * n_scorable
        perfect = weights["tpWeight"] * n_windows
        out[profile] = {"score": 100.0 * (best["raw"] - null) / (perfect - null), **best,
                        "null": null, "perfect": perfect}
    return out


def score_corpus_at(corpus: list[Series], scores_by_name: dict, thresholds: dict,
                    profiles=PROFILES) -> dict:
    """NAB score per profile at fixed thresholds (chosen elsewhere, e.g. on a tuning split):
    the honest number for a validation split, where no sweep may look at its labels."""
    out = {}
    for profile, weights in profiles.items():
        raw = tp = fn = fp = 0
        n_windows = n_scorable = 0
        for series in corpus:
            r = score_series(series, scores_by_name[series.name], thresholds[profile], weights)
            raw += r["raw"]
            tp, fn, fp = tp + r["tp"], fn + r["fn"], fp + r["fp"]
            n_windows += len(series.windows)
            n_scorable += sum(b >= series.probation for _, b in series.windows)
        null = -weights["fnWeight"] * n_scorable
        perfect = weights["tpWeight"] * n_windows
        out[profile] = {"score": 100.0 * (raw - null) / (perfect - null), "raw": raw,
                        "threshold": thresholds[profile], "tp": tp, "fn": fn, "fp": fp}
    return out


def null_scores(series: Series) -> np.ndarray:
    """Flags nothing at any threshold above 0: scores 0 by construction."""
    return np.zeros(series.values.size)


def perfect_scores(series: Series) -> np.ndarray:
    """1.0 on each window's first row: scores 100 by construction."""
    out = np.zeros(series.values.size)
    out[[a for a, _ in series.windows]] = 1.0
    return out


def zscore_scores(values, window: int = 100) -> np.ndarray:
    """Online rolling z-score against the previous ``window`` values, mapped to 0..1 as z/(1+z)."""
    values = np.asarray(values, dtype=float)
    out = np.zeros(values.size)
    if values.size <= window:
        return out
    past = np.lib.stride_tricks.sliding_window_view(values[:-1], window)
    dev = np.abs(values[window:] - past.mean(axis=1))
    den = past.std(axis=1) + dev  # z / (1 + z) == dev / (std + dev)
    out[window:] = np.divide(dev, den, out=np.zeros_like(dev), where=den > 0)
    return out


def load_scores(scores_dir, corpus: list[Series]) -> dict[str, np.ndarray]:
    """Read ``scores_dir/<category>/<file>.csv`` (timestamp,value,anomaly_score) per series."""
    out = {}
    for series in corpus:
        header, rows = _read_csv(Path(scores_dir) / series.name)
        col = header.index("anomaly_score")
        if len(rows) != series.values.size:
            raise ValueError(f"{series.name}: {len(rows)} score rows for {series.values.size}")
        ts = np.array([r[0] for r in rows], dtype="datetime64[s]")
        if not np.array_equal(ts, series.timestamps):
            raise ValueError(f"{series.name}: score timestamps differ from the data's")
        out[series.name] = np.array([float(r[col]) for r in rows])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", required=True, help="NAB root (data/, labels/)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--scores", help="directory of <category>/<file>.csv with anomaly_score")
    src.add_argument("--baseline", choices=["null", "perfect", "zscore"])
    parser.add_argument("--zscore-window", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    corpus = load_corpus(args.nab)
    if args.scores:
        scores = load_scores(args.scores, corpus)
    else:
        make = {"null": null_scores, "perfect": perfect_scores,
                "zscore": lambda s: zscore_scores(s.values, args.zscore_window)}[args.baseline]
        scores = {s.name: make(s) for s in corpus}
    result = score_corpus(corpus, scores)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{len(corpus)} files, {sum(s.values.size for s in corpus)} rows, "
          f"{sum(len(s.windows) for s in corpus)} windows")
    print(f"{'profile':<20} {'score':>7} {'threshold':>10} {'tp':>4} {'fn':>4} {'fp':>6} "
          f"{'raw':>9}")
    for profile, r in result.items():
        print(f"{profile:<20} {r['score']:7.2f} {r['threshold']:10.5g} {r['tp']:4d} {r['fn']:4d} "
              f"{r['fp']:6d} {r['raw']:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
