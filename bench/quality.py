"""Detection quality of the default configuration, in one table.

    python bench/quality.py [--shared ../shared] [--nab-only]

1. NAB (nab-dev): the scores `telltale score` writes (default detector `likelihood`), scored with
   NAB's rules (bench/nab_score.py), next to the rolling z-score it replaced (`--detector zscore`)
   and the scorer's plain z-score baseline; the null detector scores 0 by construction.
2. trainfaults-dev: `telltale detect` over every run, scored by bench/trainfaults_score.py.
3. Cost: events/s of each registered detector on one core (a 10k-value series, one batch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nab_score  # noqa: E402
import trainfaults_score  # noqa: E402

from telltale.detectors import REGISTRY  # noqa: E402
from telltale.score import DEFAULT_DETECTOR, score_values  # noqa: E402


def nab_section(shared: Path) -> list[str]:
    corpus = nab_score.load_corpus(shared / "data" / "nab-dev")
    rows = sum(s.values.size for s in corpus)
    t0 = time.perf_counter()
    ours = {s.name: score_values(s.values) for s in corpus}
    rate = rows / (time.perf_counter() - t0)
    old = {s.name: score_values(s.values, "zscore") for s in corpus}
    base = {s.name: nab_score.zscore_scores(s.values) for s in corpus}
    r_ours, r_old, r_base = (nab_score.score_corpus(corpus, x) for x in (ours, old, base))
    new = f"{DEFAULT_DETECTOR} (default)"
    lines = [f"NAB (nab-dev, {len(corpus)} files, {sum(len(s.windows) for s in corpus)} windows; "
             f"0 = null detector, 100 = perfect; telltale score {rate:,.0f} rows/s)",
             f"  {'profile':20} {new:>21} {'zscore w400 (old)':>18} {'zscore baseline':>16} "
             f"{'new/base':>8}"]
    for p in nab_score.PROFILES:
        a, o, b = r_ours[p]["score"], r_old[p]["score"], r_base[p]["score"]
        ratio = f"{a / b:8.2f}" if b > 0 else "     n/a"
        lines.append(f"  {p:20} {a:21.2f} {o:18.2f} {b:16.2f} {ratio}")
    r = r_ours["standard"]
    lines.append(f"  {DEFAULT_DETECTOR}, standard profile: threshold {r['threshold']:.3f}, "
                 f"windows detected {r['tp']}/{r['tp'] + r['fn']}, false-positive rows {r['fp']}")
    return lines


def trainfaults_section(shared: Path) -> list[str]:
    data = shared / "data" / "trainfaults-dev"
    with tempfile.TemporaryDirectory() as tmp:
        alerts_path = Path(tmp) / "alerts.jsonl"
        info = trainfaults_score.run_detect(data, alerts_path, Path(tmp))
        report = trainfaults_score.score_alerts(trainfaults_score.load_labels(data),
                                                trainfaults_score.load_alerts(alerts_path))
    head = (f"trainfaults-dev ({info['runs']} runs, {info['events']} events; "
            f"telltale detect {info['events_per_s']:,.0f} events/s incl. start-up)")
    return [head, *("  " + x for x in trainfaults_score.format_report(report).splitlines())]


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
                    help="the shared/ folder with data/nab-dev and data/trainfaults-dev")
    ap.add_argument("--nab-only", action="store_true",
                    help="only the NAB section (skips trainfaults-dev and the cost table)")
    args = ap.parse_args(argv)
    shared = Path(args.shared)
    sections = [lambda: nab_section(shared)]
    if not args.nab_only:
        sections += [lambda: trainfaults_section(shared), cost_section]
    for section in sections:
        print("\n".join(section()), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
