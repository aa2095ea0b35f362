"""Line-protocol encoding speed: the worker's encoder against influxdb-client's ``Point``.

    .venv/bin/python bench/lineprotocol.py                 # 200 runs x 500 steps, 5 repeats

The points are what the processor makes of simulated training runs (raw values as column
blocks, window statistics, scores, alerts). Prints lines/s of the worker's encoder
(``to_line`` / ``block_lines``), of influxdb-client's ``Point.to_line_protocol()`` on the
same points (the baseline), and the ratio; medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from telltale.schema import parse_event
from telltale.simulate import SimRun, simulate
from telltale.sinks.influx import block_lines, to_line
from telltale.streams.processor import RunProcessor


def outputs(runs: int, steps: int):
    proc = RunProcessor()
    points, blocks = [], []
    for i in range(runs):
        sim = SimRun(f"bench-{i}", "spike" if i % 3 == 0 else None, steps // 2, steps=steps,
                     seed=i)
        st = proc.new_state(sim.run)
        evs = [parse_event({"step": s, "ts": ts, "kind": k, "metrics": m}, sim.run)
               for s, ts, k, m in simulate(sim, 1.7e9)]
        for j in range(0, len(evs), 50):
            out = proc.process(st, evs[j:j + 50])
            points += out.points
            blocks += out.blocks
        out = proc.end(st)
        points += out.points
        blocks += out.blocks
    return points, blocks


def encode(points, blocks) -> int:
    n = 0
    for p in points:
        to_line(p)
        n += 1
    for b in blocks:
        n += len(block_lines(b))
    return n


def encode_client(points, blocks) -> int:
    from influxdb_client import Point as CPoint

    n = 0
    for p in points + [q for b in blocks for q in b.points()]:
        cp = CPoint(p.measurement)
        for k, v in p.tags.items():
            cp.tag(k, v)
        for k, v in p.fields.items():
            cp.field(k, v)
        cp.time(p.time_ns)
        cp.to_line_protocol()
        n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    points, blocks = outputs(args.runs, args.steps)
    rates = {"telltale": [], "influxdb-client": []}
    for _ in range(args.repeat):
        for name, fn in (("telltale", encode), ("influxdb-client", encode_client)):
            t = time.perf_counter()
            n = fn(points, blocks)
            rates[name].append(n / (time.perf_counter() - t))
    ours, base = (statistics.median(rates[k]) for k in ("telltale", "influxdb-client"))
    print(f"{n} lines ({len(points)} points, {len(blocks)} blocks), median of {args.repeat}")
    print(f"influxdb-client Point: {base:,.0f} lines/s (baseline)")
    print(f"telltale encoder:      {ours:,.0f} lines/s, {ours / base:.1f}x the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
