"""CPU per metric value of the worker's in-process path, stage by stage (no Kafka, no
InfluxDB): what each layer of the default configuration adds to the decode.

    .venv/bin/python bench/cpu_stages.py          # ~1 min, prints 2 interleaved rounds
    .venv/bin/python bench/cpu_stages.py --per-message 65   # small batches (bench/latency.py's)

The workload is bench/throughput.py's (16 simulated runs, ~9 values per event, 500 events
per message; ``--per-message N``: N, each message one processor call). Stages, each
including the ones before it:
1. decode_message only (JSON + validation: the raw decode of bench/throughput.py);
2. the processor with no windows, detectors or run rules: grouping per series, raw values
   as column blocks, line protocol;
3. plus the default windows' statistics (and their window_stats lines);
4. the default configuration (detectors, run rules, scores=notable).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# bench/ for workload, the repo root for tests.support
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from workload import sim_events  # noqa: E402

from telltale.config import Config  # noqa: E402
from telltale.detectors.pipelines import Pipelines  # noqa: E402
from telltale.schema import decode_message, encode_batch  # noqa: E402
from telltale.sinks.buffer import DurablePointBuffer  # noqa: E402
from telltale.streams.processor import RunProcessor  # noqa: E402


def messages(runs: int = 16, steps: int = 6000, per_message: int = 500) -> list[bytes]:
    out = []
    for r in range(runs):
        run, evs = f"run-{r:03d}", []
        for step, ts, metrics in sim_events(run, steps, seed=r,
                                            fault="spike" if r % 4 == 1 else None):
            evs.append({"step": step, "ts": ts, "metrics": metrics})
            if len(evs) == per_message:
                out.append(encode_batch(run, evs))
                evs = []
    return out


def cpu_per_value(msgs: list[bytes], proc: RunProcessor | None) -> float:
    """CPU µs per metric value of decoding ``msgs`` and (with ``proc``) processing them and
    encoding the output as line protocol."""
    buf = DurablePointBuffer(tempfile.mkdtemp(prefix="bench-stages-"))
    states: dict[str, dict] = {}
    values = 0
    t0 = time.process_time()
    for raw in msgs:
        events, _ = decode_message(raw)
        values += sum(len(e.metrics) for e in events)
        if proc is None:
            continue
        run = events[0].run
        st = states.get(run) or states.setdefault(run, proc.new_state(run))
        out = proc.process(st, events)
        buf.add(out.points, out.blocks)
        buf.lines = []
    return (time.process_time() - t0) / values * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--per-message", type=int, default=500,
                   help="events per message, i.e. per processor call (default 500)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    args = p.parse_args(argv)
    msgs = messages(per_message=args.per_message)
    none = Pipelines(rules=[("*", [])], run_rules=[])
    stages = [("decode only (the raw decode)", lambda: None),
              ("+ grouping, raw-value blocks, line protocol",
               lambda: RunProcessor(replace(Config(), windows=()), pipelines=none)),
              ("+ window statistics (default windows)",
               lambda: RunProcessor(Config(), pipelines=none)),
              ("default: + detectors, run rules, scores", lambda: RunProcessor(Config()))]
    got: dict[str, list[float]] = {name: [] for name, _ in stages}
    for _ in range(args.rounds):  # interleaved rounds: the machine's drift hits every stage alike
        for name, make in stages:
            got[name].append(cpu_per_value(msgs, make()))
    base = statistics.median(got[stages[0][0]])
    print(f"{len(msgs)} messages; CPU µs per metric value (median of {args.rounds}), "
          "and x the decode:")
    for name, _ in stages:
        us = statistics.median(got[name])
        print(f"  {name:46s} {us:6.2f} µs  x{us / base:5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
