"""Worker throughput against the practical limit of a Python Kafka consumer, in one run.

    eval "$(bash scripts/services.sh start)"
    .venv/bin/python bench/throughput.py                    # 500k events, 4 partitions
    .venv/bin/python bench/throughput.py --events 100000 --scale-out --profile

1. Pre-load a topic with Telltale's producer (simulated training runs, ~9 values/event).
2. (a) raw aiokafka reads and decodes the topic (decode_message): the limit;
   (b) `telltale worker` (default detectors, InfluxDB sink) drains it on a fresh consumer
   group: metric values/s from its first processed event until every point is written;
   then the count of metric values read back from InfluxDB must equal the count sent.
3. ``--scale-out``: 2 workers versus 1 on an 8-partition copy of the topic.
4. ``--profile``: where the worker's time goes (the processor + line-protocol path
   in-process under cProfile, on the same messages).
Prints medians, the worker/raw ratio of rates and, from the same run, CPU µs per metric
value of the raw decode (this process), the worker (after its start-up) and InfluxDB
(/proc/<pid>/stat user + system), with the ratio worker/raw (target <= 3).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

# bench/ for workload, the repo root for tests.support
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from workload import (  # noqa: E402
    bench_config,
    drain_with_workers,
    load,
    median,
    preload,
    raw_drain,
    with_group,
)

from telltale.schema import decode_message  # noqa: E402
from telltale.sinks.buffer import DurablePointBuffer  # noqa: E402
from telltale.streams.processor import RunProcessor  # noqa: E402
from tests.support.influx import drop_database, metric_values  # noqa: E402

TARGET = 0.5  # worker/raw metric values per second (not reachable on 2 shared cores)
CPU_TARGET = 3.0  # worker/raw CPU per metric value


def run_path(messages: list[bytes], spill: str) -> tuple[int, float, int]:
    """The worker's per-message path without Kafka: decode, process, line protocol."""
    proc = RunProcessor()
    buf = DurablePointBuffer(spill)
    states: dict[str, dict] = {}
    n_val = lines = 0
    t0 = time.perf_counter()
    for raw in messages:
        events, _ = decode_message(raw)
        if not events:
            continue
        run = events[0].run
        st = states.get(run) or states.setdefault(run, proc.new_state(run))
        out = proc.process(st, events)
        buf.add(out.points, out.blocks)
        n_val += sum(len(ev.metrics) for ev in events)
        if len(buf) > 20_000:
            lines += len(buf)
            buf.lines = []
    return n_val, time.perf_counter() - t0, lines + len(buf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000, help="events to pre-load (500k)")
    ap.add_argument("--runs", type=int, default=16, help="simulated runs (16)")
    ap.add_argument("--partitions", type=int, default=4, help="metrics topic partitions (4)")
    ap.add_argument("--raw-repeat", type=int, default=3, help="raw drains, median (3)")
    ap.add_argument("--worker-repeat", type=int, default=1, help="worker drains, median (1)")
    ap.add_argument("--scores", default="default",
                    help="TELLTALE_SCORES settings to drain with, comma-separated, "
                         "interleaved per repeat (e.g. all,notable; default: the default)")
    ap.add_argument("--scale-out", action="store_true",
                    help="also 2 workers vs 1 on an 8-partition topic")
    ap.add_argument("--profile", action="store_true",
                    help="profile the processor path in-process on the same messages")
    ap.add_argument("--profile-worker", action="store_true",
                    help="one more drain with the worker itself under cProfile")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="telltale-bench-"))
    print(f"throughput bench: {args.events} events, {args.runs} runs, "
          f"{args.partitions} partitions; {load()}")

    cfg = bench_config("tp", args.partitions, tmp)
    t = time.perf_counter()
    n_events, n_values = preload(cfg, args.events, args.runs,
                                 progress=lambda m: None)
    print(f"pre-loaded {cfg.metrics_topic}: {n_events} events, {n_values} metric values "
          f"in {time.perf_counter() - t:.1f} s")

    raw_rates, raw_cpu, keep = [], [], []
    topic_values, topic_events = n_values, n_events
    for i in range(args.raw_repeat):
        c0 = time.process_time()
        ev, val, secs = raw_drain(cfg, keep if i == 0 else None)
        raw_cpu.append((time.process_time() - c0) / val * 1e6)
        if val != n_values and i == 0:  # a batch re-sent after a timed-out ack
            print(f"  note: the topic holds {val} values for {n_values} sent (re-sent batches;"
                  " InfluxDB keeps each point once); rates count what is in the topic")
        topic_values, topic_events = val, ev
        raw_rates.append(val / secs)
        print(f"  raw aiokafka #{i + 1}: {val / secs:,.0f} values/s ({secs:.2f} s), "
              f"{raw_cpu[-1]:.2f} CPU µs/value")
    raw = median(raw_rates)

    modes = [m.strip() for m in args.scores.split(",") if m.strip()]
    rates: dict[str, list] = {m: [] for m in modes}
    per_value: dict[str, list] = {m: [] for m in modes}
    for i in range(args.worker_repeat):
        for mode in modes:  # interleaved: each setting on the same topic, in turn
            wcfg = with_group(cfg, f"w{i}{mode[:3]}")
            if mode != "default":
                os.environ["TELLTALE_SCORES"] = mode  # the worker's environment
            else:
                os.environ.pop("TELLTALE_SCORES", None)
            cpu: dict = {}
            secs = drain_with_workers(wcfg, topic_events, 1, cpu=cpu)
            got = metric_values(wcfg)
            rates[mode].append(topic_values / secs)
            ok = "OK" if got == n_values else "MISMATCH"
            print(f"  worker #{i + 1}, scores {mode}: {topic_values / secs:,.0f} values/s "
                  f"({secs:.1f} s); InfluxDB read back {got} of {n_values} values: {ok}")
            print("    CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
            pv = {"worker": cpu["worker 0"] - cpu["worker 0 start-up"],
                  "InfluxDB": cpu.get("influxdb", float("nan")),
                  "Kafka": cpu.get("kafka", float("nan"))}
            per_value[mode].append({k: v * 1e6 / topic_values for k, v in pv.items()})
            drop_database(wcfg)
            if got != n_values:
                return 1
    rc = median(raw_cpu)
    print(f"\nraw aiokafka (decode only): {raw:,.0f} metric values/s (median of "
          f"{len(raw_rates)}), {rc:.2f} CPU µs per metric value")
    for mode in modes:
        worker = median(rates[mode])
        cpu_v = {k: median([p[k] for p in per_value[mode]]) for k in per_value[mode][0]}
        print(f"telltale worker, scores {mode} (median of {len(rates[mode])}): "
              f"{worker:,.0f} metric values/s, ratio worker/raw {worker / raw:.2f} "
              f"(target >= {TARGET})")
        print(f"  CPU µs per metric value: worker {cpu_v['worker']:.2f} (after start-up), "
              f"InfluxDB {cpu_v['InfluxDB']:.2f}, Kafka {cpu_v['Kafka']:.2f}; "
              f"CPU ratio worker/raw {cpu_v['worker'] / rc:.1f} (target <= {CPU_TARGET})")
    print(load())

    if args.profile:
        val, secs, lines = run_path(keep, str(tmp / "spill-a"))
        print(f"\nin-process decode+process+line protocol (no Kafka, no InfluxDB): "
              f"{val / secs:,.0f} values/s, {lines} lines")
        n = max(1, len(keep) // 4)
        prof = cProfile.Profile()
        prof.enable()
        run_path(keep[:n], str(tmp / "spill-b"))
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        print(f"cProfile of the same path on {n} messages (top by own time):")
        print("\n".join(s.getvalue().splitlines()[:40]))

    if args.profile_worker:
        wc = with_group(cfg, "prof")
        path = str(tmp / "worker.prof")
        secs = drain_with_workers(wc, topic_events, 1, profile=path)
        print(f"\nworker under cProfile: {topic_values / secs:,.0f} values/s; top by own time:")
        s = io.StringIO()
        pstats.Stats(path, stream=s).sort_stats("tottime").print_stats(20)
        print("\n".join(s.getvalue().splitlines()[6:34]))
        drop_database(wc)

    if args.scale_out:
        c8 = bench_config("so", 8, tmp)
        e8, v8 = preload(c8, args.events, args.runs, progress=lambda m: None)
        r = {}
        for n in (1, 2):
            wc = with_group(c8, f"x{n}")
            cpu: dict = {}
            secs = drain_with_workers(wc, e8, n, cpu=cpu)
            got = metric_values(wc)
            r[n] = v8 / secs
            print(f"  {n} worker(s) on 8 partitions: {r[n]:,.0f} values/s ({secs:.1f} s); "
                  f"InfluxDB {got}/{v8}; CPU s: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
            drop_database(wc)
        print(f"scale-out 2 workers / 1 worker: {r[2] / r[1]:.2f}; {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
