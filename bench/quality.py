"""Detection quality of the default configuration: tuning and validation, side by side.

    python bench/quality.py [--shared ../shared] [--nab-only | --trainfaults-only]

Nothing is chosen on the validation data: it is only measured. Quote validation numbers.

1. trainfaults: `telltale detect` over every run of ``trainfaults-dev`` (tuning) and of
   ``trainfaults-dev2`` (validation, 48 runs), scored by bench/trainfaults_score.py; the
   gap between the two; which detectors opened the incidents, correct and false.
2. NAB (``nab-dev``, split half/half by file within each category: the tuning half is
   files 0, 2, 4… of each category in name order, the validation half 1, 3, 5…): for each
   candidate scorer, the NAB score on the tuning half (threshold swept there, as NAB does),
   on the validation half *at the tuning threshold* (the honest number) and, for reference,
   with its own sweep (optimistic); rows/s and peak memory of scoring.
   Candidates: ``likelihood`` (the default of `telltale score`), the rolling ``zscore``, and
   River's ``HalfSpaceTrees`` when River is installed (``pip install river``).
3. Cost: values/s of each registered detector on one core (a 10k-value series, one batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nab_score  # noqa: E402
import trainfaults_score  # noqa: E402

from telltale.detectors import REGISTRY  # noqa: E402
from telltale.score import DEFAULT_DETECTOR, score_values  # noqa: E402

TUNING, VALIDATION = "trainfaults-dev", "trainfaults-dev2"


# -- trainfaults ------------------------------------------------------------------------


def trainfaults_report(data: Path):
    with tempfile.TemporaryDirectory() as tmp:
        alerts_path = Path(tmp) / "alerts.jsonl"
        info = trainfaults_score.run_detect(data, alerts_path, Path(tmp))
        report = trainfaults_score.score_alerts(trainfaults_score.load_labels(data),
                                                trainfaults_score.load_alerts(alerts_path))
    return info, report


def _f(x, fmt="{:.3f}") -> str:
    return "n/a" if x is None or x != x else fmt.format(x)


def trainfaults_section(shared: Path) -> list[str]:
    tune_info, tune = trainfaults_report(shared / "data" / TUNING)
    val_info, val = trainfaults_report(shared / "data" / VALIDATION)
    rows = [
        ("recall (faulty runs detected)", tune.recall, val.recall, "{:.3f}", "≥ 0.97"),
        ("precision (correct incidents)", tune.precision, val.precision, "{:.3f}", "≥ 0.95"),
        ("false alarms / 10k clean steps", tune.false_alarms_per_10k,
         val.false_alarms_per_10k, "{:.2f}", "≤ 1"),
        ("acute median delay (steps)", tune.acute_median_delay, val.acute_median_delay,
         "{:.1f}", "≤ 3"),
        ("incidents per faulty run, max", tune.incidents_max, val.incidents_max, "{:.0f}",
         "≤ 3"),
        ("incidents per faulty run, mean", tune.incidents_mean, val.incidents_mean, "{:.2f}",
         "≤ 1.5"),
    ]
    lines = [f"trainfaults: tuning {TUNING} ({tune_info['runs']} runs) vs validation "
             f"{VALIDATION} ({val_info['runs']} runs); telltale detect "
             f"{val_info['events_per_s']:,.0f} events/s incl. start-up",
             f"  {'':32} {'tuning':>8} {'VALIDATION':>10} {'gap':>8}  goal"]
    for name, a, b, fmt, goal in rows:
        gap = "" if a != a or b != b else fmt.format(b - a)
        lines.append(f"  {name:32} {_f(a, fmt):>8} {_f(b, fmt):>10} {gap:>8}  {goal}")
    t_named = f"{tune.straggler_named}/{tune.straggler_runs}"
    v_named = f"{val.straggler_named}/{val.straggler_runs}"
    lines.append(f"  {'straggler rank named':32} {t_named:>8} {v_named:>10}")
    missed = sorted(f for f, r in val.per_fault.items() if r.recall < 1)
    lines.append("  validation: fault types not always caught: " + (", ".join(missed) or "none"))
    lines.append("  incidents opened per detector, correct/false (tuning | validation):")
    for det in sorted(set(tune.by_detector) | set(val.by_detector)):
        t, v = tune.by_detector.get(det, [0, 0]), val.by_detector.get(det, [0, 0])
        lines.append(f"    {det:12} {t[0]:>3}/{t[1]:<3} | {v[0]:>3}/{v[1]:<3}")
    lines += multivariate_lines(shared / "data" / VALIDATION, val, val_info)
    lines.append("")
    lines.append("  validation report:")
    lines += ["    " + x for x in trainfaults_score.format_report(val).splitlines()]
    return lines


def multivariate_lines(data: Path, base, base_info) -> list[str]:
    """What the multivariate KNN and One-Class SVM (scoring by default, not paging) would
    add on validation if they paged, and what scoring them costs."""
    from telltale.detectors.pipelines import DEFAULT_RUN_RULES

    out = ["  multivariate KNN / One-Class SVM on the step vector (score by default, page "
           "only with page=True), on validation:"]
    variants = {
        "without them": [r for r in DEFAULT_RUN_RULES if r[0] not in ("mvknn", "mvocsvm")],
        "paging (page=True)": [(n, {**kw, "page": True}) if n in ("mvknn", "mvocsvm")
                               else (n, kw) for n, kw in DEFAULT_RUN_RULES]}
    for label, rules in variants.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pipelines.json"
            path.write_text(json.dumps({"run_rules": rules}))
            old = os.environ.get("TELLTALE_PIPELINES")
            os.environ["TELLTALE_PIPELINES"] = str(path)
            try:
                info, rep = trainfaults_report(data)
            finally:
                if old is None:
                    os.environ.pop("TELLTALE_PIPELINES")
                else:
                    os.environ["TELLTALE_PIPELINES"] = old
        mv = [rep.by_detector.get(d, [0, 0]) for d in ("mvknn", "mvocsvm")]
        out.append(f"    {label:20} recall {rep.recall:.3f} precision {_f(rep.precision)} "
                   f"FA/10k {rep.false_alarms_per_10k:.2f}; incidents opened by mvknn "
                   f"{mv[0][0]}/{mv[0][1]}, mvocsvm {mv[1][0]}/{mv[1][1]} (correct/false); "
                   f"{info['events_per_s']:,.0f} events/s")
    out.append(f"    {'default (scoring)':20} recall {base.recall:.3f} precision "
               f"{_f(base.precision)} FA/10k {base.false_alarms_per_10k:.2f}; "
               f"{base_info['events_per_s']:,.0f} events/s")
    return out


# -- NAB --------------------------------------------------------------------------------


def split_corpus(corpus):
    """Tuning and validation halves: alternate files of each category, in name order."""
    by_cat: dict[str, list] = {}
    for s in sorted(corpus, key=lambda s: s.name):
        by_cat.setdefault(s.name.split("/")[0], []).append(s)
    tune, val = [], []
    for files in by_cat.values():
        tune += files[0::2]
        val += files[1::2]
    return tune, val


def river_hst_scores(values: np.ndarray) -> np.ndarray:
    """River's HalfSpaceTrees on the value (min-max scaled online), score then learn."""
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
    out = np.zeros(len(values))
    for i, v in enumerate(values.tolist()):
        x = {"v": v if v == v else 0.0}
        out[i] = model.score_one(x)
        model.learn_one(x)
    return out


def candidates() -> dict:
    c = {f"{DEFAULT_DETECTOR} (default)": lambda v: score_values(v),
         "zscore w400": lambda v: score_values(v, "zscore")}
    try:
        import river  # noqa: F401

        c["river HalfSpaceTrees"] = river_hst_scores
    except ImportError:
        pass
    return c


def nab_section(shared: Path) -> list[str]:
    corpus = nab_score.load_corpus(shared / "data" / "nab-dev")
    tune, val = split_corpus(corpus)
    rows = sum(s.values.size for s in corpus)
    lines = [f"NAB (nab-dev, {len(corpus)} files): tuning half {len(tune)} files, validation "
             f"half {len(val)} files (alternate files per category); 0 = null, 100 = perfect",
             f"  {'scorer':24} {'profile':19} {'tuning':>7} {'VALIDATION':>10} {'val swept':>9} "
             f"{'gap':>7} {'rows/s':>9} {'peak MB':>8}"]
    longest = max(corpus, key=lambda s: s.values.size)
    for name, fn in candidates().items():
        t0 = time.perf_counter()
        scores = {s.name: fn(s.values) for s in corpus}
        rate = rows / (time.perf_counter() - t0)
        tracemalloc.start()  # peak memory on the longest file (tracing slows it: not timed)
        fn(longest.values)
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
        r_tune = nab_score.score_corpus(tune, scores)
        thresholds = {p: r_tune[p]["threshold"] for p in nab_score.PROFILES}
        r_val = nab_score.score_corpus_at(val, scores, thresholds)
        r_val_swept = nab_score.score_corpus(val, scores)
        for k, p in enumerate(nab_score.PROFILES):
            a, b, c = r_tune[p]["score"], r_val[p]["score"], r_val_swept[p]["score"]
            extra = f" {rate:9,.0f} {peak:8.1f}" if k == 0 else ""
            lines.append(f"  {name if k == 0 else '':24} {p:19} {a:7.2f} {b:10.2f} {c:9.2f} "
                         f"{b - a:7.2f}{extra}")
    lines.append("  (NAB's own sweep picks the threshold with the labels; 'VALIDATION' uses the "
                 "tuning half's threshold, 'val swept' lets the validation labels choose it)")
    return lines


# -- cost -------------------------------------------------------------------------------


def cost_section(n: int = 10_000, repeats: int = 5) -> list[str]:
    rng = np.random.default_rng(0)
    values = np.abs(1 + 0.1 * rng.standard_normal(n))
    steps = np.arange(1, n + 1)
    lines = [f"detector cost (one core, {n} values in one batch, median of {repeats})"]
    for name, cls in sorted(REGISTRY.items()):
        det = cls()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            det.update(det.new_state(), steps, values)
            times.append(time.perf_counter() - t0)
        lines.append(f"  {name:12} {n / float(np.median(times)):>14,.0f} values/s")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"),
                    help="the shared/ folder with data/nab-dev and data/trainfaults-dev*")
    only = ap.add_mutually_exclusive_group()
    only.add_argument("--nab-only", action="store_true", help="only the NAB section")
    only.add_argument("--trainfaults-only", action="store_true",
                      help="only the trainfaults section")
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    sections = []
    if not args.nab_only:
        sections.append(lambda: trainfaults_section(shared))
    if not args.trainfaults_only:
        sections.append(lambda: nab_section(shared))
    if not (args.nab_only or args.trainfaults_only):
        sections.append(cost_section)
    for section in sections:
        print("\n".join(section()), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
