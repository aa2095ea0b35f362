"""Cost of the alert stage: the lifecycle (streams/lifecycle.py) against one record per finding.

    python bench/alerts_cost.py [--shared ../shared] [--repeats 5]

Runs every trainfaults-dev run through RunProcessor in 500-event batches, twice per repeat:
with the lifecycle, and with a baseline alert stage that emits one plain record per finding
(what the processor did before). Prints the median events/s of each and their ratio, measured
in the same process, plus the number of records each produced.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from telltale.config import Config
from telltale.schema import decode_message, encode_batch
from telltale.streams.processor import RunProcessor

HERE = Path(__file__).resolve().parent


def load_batches(data: Path, size: int = 500) -> list[tuple[str, list]]:
    batches = []
    for p in sorted((data / "runs").glob("*.jsonl")):
        rows = [json.loads(x) for x in p.open() if x.strip()]
        for i in range(0, len(rows), size):
            part = rows[i:i + size]
            run = part[0]["run"]
            evs, _ = decode_message(encode_batch(run, [{k: v for k, v in r.items() if k != "run"}
                                                       for r in part]))
            batches.append((run, evs))
    return batches


class PerFinding:
    """Baseline alert stage: one record per finding, no state."""

    def process(self, state, candidates, seen, points=()):
        return [{"run": state["run"], "metric": c.metric, "rank": c.rank, "step": c.step,
                 "ts": c.ts, "detector": c.finding.detector, "severity": c.finding.severity,
                 "state": "firing", "score": c.finding.score, "value": c.value, "id": "",
                 "message": f"{c.metric} {c.finding.message}", "explanation": ""}
                for c in candidates]

    def close(self, state, reason=""):
        return []


def run_once(batches, baseline: bool) -> tuple[float, int, int]:
    proc = RunProcessor(Config())
    if baseline:
        proc.alerts = PerFinding()
    states: dict[str, dict] = {}
    n_ev = n_rec = 0
    t0 = time.perf_counter()
    for run, evs in batches:
        st = states.get(run)
        if st is None:
            st = states[run] = proc.new_state(run)
        out = proc.process(st, evs)
        n_ev += len(evs)
        n_rec += len(out.alerts)
    for st in states.values():
        n_rec += len(proc.flush(st).alerts)
    return time.perf_counter() - t0, n_ev, n_rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    batches = load_batches(Path(args.shared) / "data" / "trainfaults-dev")
    base, life = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        dt, n, rb = run_once(batches, baseline=True)
        base.append(n / dt)
        dt, n, rl = run_once(batches, baseline=False)
        life.append(n / dt)
    b, lf = float(np.median(base)), float(np.median(life))
    print(f"alert stage cost on trainfaults-dev ({n} events, 500-event batches, "
          f"median of {args.repeats})")
    print(f"  baseline (one record per finding) {b:>12,.0f} events/s  {rb:>4} records")
    print(f"  lifecycle + explanations          {lf:>12,.0f} events/s  {rl:>4} records")
    print(f"  ratio lifecycle / baseline        {lf / b:>12.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
