"""Soak: a day of streaming compressed into one run of `telltale worker` (issue 8, fault 6).

    eval "$(bash scripts/services.sh start)"
    .venv/bin/python bench/soak.py                          # 10M events at 8k events/s
    .venv/bin/python bench/soak.py --events 1000000 --rate 8000

Runs start and end all the time (``--concurrent`` live runs, each 2k-20k steps at one step
a second, so windows open and expire; every run ends with its ``end`` event). A paced
producer publishes while the worker (default detectors, InfluxDB sink) consumes; every
``--sample`` seconds the worker's RSS, its cached and stored runs, and the consumer lag are
sampled. Pass: RSS flat after warm-up (last <= first + ``--rss-slack`` MB), lag flat (the
second half's median lag no more than the first half's + 2 s of input), every event
processed, ended runs released.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

# bench/ for workload, the repo root for tests.support
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from workload import (  # noqa: E402
    RunMix,
    bench_config,
    consumer_lag,
    load,
    median,
    publish_mix,
    start_worker,
)

from telltale.streams.topics import ensure_topics  # noqa: E402
from tests.support.influx import drop_database  # noqa: E402
from tests.support.workers import rss_mb  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000, help="events (10M)")
    ap.add_argument("--rate", type=float, default=8000, help="events/s published (8000)")
    ap.add_argument("--concurrent", type=int, default=64, help="live runs at a time (64)")
    ap.add_argument("--min-steps", type=int, default=2000)
    ap.add_argument("--max-steps", type=int, default=20000)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--rss-slack", type=float, default=100.0,
                    help="allowed RSS growth after warm-up, MB (100)")
    ap.add_argument("--keep-data", action="store_true", help="keep the InfluxDB database")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="telltale-soak-"))
    cfg = bench_config("soak", 4, tmp)
    ensure_topics(cfg)
    print(f"soak: {args.events:,} events at {args.rate:,.0f} events/s "
          f"(~{args.events / args.rate / 60:.0f} min), {args.concurrent} live runs of "
          f"{args.min_steps}-{args.max_steps} steps; {load()}")
    w = start_worker(cfg, "w0")
    w.wait_ready(90)

    mix = RunMix(args.concurrent, args.min_steps, args.max_steps)
    result: dict = {}
    stop = threading.Event()

    def produce():
        result["sent"] = publish_mix(cfg, mix, args.events, rate=args.rate,
                                     progress=lambda m: None, stop=stop)

    th = threading.Thread(target=produce, daemon=True)
    t0 = time.monotonic()
    th.start()
    samples = []  # (t, rss MB, lag messages, cached runs, table runs, events done)
    print(f"{'t s':>6} {'RSS MB':>7} {'lag msgs':>8} {'cached':>6} {'stored':>6} "
          f"{'msgs':>9}")
    try:
        while True:
            w.check()
            st = w.status()
            s = (time.monotonic() - t0, rss_mb(w.proc.pid), consumer_lag(cfg),
                 st.get("cached_runs"), st.get("table_runs"), st.get("messages", 0))
            samples.append(s)
            if len(samples) % max(1, int(60 / args.sample)) == 1:
                print(f"{s[0]:6.0f} {s[1]:7.0f} {s[2]!s:>8} {s[3]!s:>6} {s[4]!s:>6} "
                      f"{s[5]:>9} {mix.ended:>5} runs ended, {load()}", flush=True)
            if not th.is_alive() and s[2] == 0 and st.get("influx", {}).get("pending") == 0:
                break
            if time.monotonic() - t0 > args.events / args.rate * 3 + 600:
                print("soak: the worker did not catch up in time")
                break
            time.sleep(args.sample)
    finally:
        stop.set()
        th.join(30)
        final = w.status()
        w.stop(60)
    sent, values = result.get("sent", (0, 0))
    elapsed = samples[-1][0]
    warm = [s for s in samples if s[0] >= min(120.0, elapsed / 10)] or samples
    rss = [s[1] for s in warm]
    lags = [s[2] for s in samples if s[2] is not None and s[0] <= args.events / args.rate]
    half = len(lags) // 2
    lag1, lag2 = (median(lags[:half]), median(lags[half:])) if half else (0, 0)
    msgs_per_s = args.rate / 500
    processed = final.get("messages", 0)
    print(f"\nsent {sent:,} events ({values:,} metric values), {mix.started} runs "
          f"({mix.ended} ended) in {elapsed:.0f} s; worker processed {processed:,} messages")
    print(f"RSS after warm-up: first {rss[0]:.0f} MB, last {rss[-1]:.0f} MB, "
          f"max {max(rss):.0f} MB")
    print(f"consumer lag (messages of 500 events): median first half {lag1:.0f}, "
          f"second half {lag2:.0f}, max {max(lags) if lags else 0}")
    print(f"runs cached at the end {final.get('cached_runs')}, stored "
          f"{final.get('table_runs')} (live runs: {args.concurrent}); "
          f"checkpoints {final.get('checkpoints')}; {load()}")
    ok_rss = rss[-1] <= rss[0] + args.rss_slack
    ok_lag = lag2 <= lag1 + 2 * msgs_per_s
    print(f"memory flat: {'PASS' if ok_rss else 'FAIL'}; lag flat: "
          f"{'PASS' if ok_lag else 'FAIL'}")
    if not args.keep_data:
        drop_database(cfg)
    return 0 if ok_rss and ok_lag else 1


if __name__ == "__main__":
    sys.exit(main())
