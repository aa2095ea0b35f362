"""Commands over files: ``telltale detect`` (the embedded pipeline over a JSONL file of
events) and ``telltale score`` (online anomaly scores for a timestamp,value CSV)."""

from __future__ import annotations

import json
import sys
import time

from telltale.config import add_flag, from_args


def add(sub) -> None:
    t = sub.add_parser("detect", help="run the embedded pipeline over a JSONL file of events")
    t.add_argument("events", help="events file (one JSON event per line)")
    t.add_argument("--out", help="alerts file (JSONL; default stdout)")
    add_flag(t, "windows")
    t.set_defaults(func=cmd_detect)

    c = sub.add_parser(
        "score", help="online anomaly scores (0..1) for a timestamp,value CSV",
        description="Write timestamp,value,anomaly_score: one row per input row, score in 0..1, "
        "strictly online (a row's score uses only earlier rows), the input NAB-style scoring "
        "needs. Empty or non-finite values score 0.")
    c.add_argument("series", help="CSV with columns timestamp,value")
    c.add_argument("--out", help="output CSV timestamp,value,anomaly_score "
                   "(default SERIES.scores.csv)")
    c.add_argument("--detector", choices=["likelihood", "zscore"], default="likelihood",
                   help="likelihood (default): nearest-neighbour and change scores through an "
                   "anomaly likelihood, one high score per episode; zscore: rolling z-score "
                   "over 400 values")
    c.set_defaults(func=cmd_score)


def cmd_detect(args) -> int:
    from telltale.streams.embedded import EmbeddedDriver

    cfg = from_args(args)
    rejects: list[dict] = []  # the first few, to show; all are counted

    def on_alert(a):
        out.write(json.dumps(a) + "\n")

    def on_reject(r):
        if len(rejects) < 5:
            rejects.append(r)

    def progress(done: float) -> None:
        print(f"\rdetect: {done:6.1%} {pipe.counts['events']} events, "
              f"{pipe.counts['alerts']} alerts", end="", file=sys.stderr, flush=True)

    pipe = EmbeddedDriver(cfg, on_alert=on_alert, on_reject=on_reject)  # settings checked
    out = open(args.out, "w") if args.out else sys.stdout
    t0 = time.perf_counter()
    pipe.feed(args.events, progress if args.out else None)
    pipe.close()
    if args.out:
        out.close()
        dt = time.perf_counter() - t0
        print(f"\rdetect: {pipe.counts['events']} events, {pipe.counts['alerts']} alerts, "
              f"{pipe.counts['rejected']} rejected, {pipe.counts['events'] / dt:,.0f} events/s "
              f"-> {args.out}", file=sys.stderr)
    for r in rejects[:5]:
        print(f"rejected: {r['reason']}", file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    from telltale.score import score_csv

    out = args.out or args.series.rsplit(".", 1)[0] + ".scores.csv"
    t0 = time.perf_counter()
    try:
        n = score_csv(args.series, out, args.detector)
    except (OSError, ValueError) as exc:
        print(f"telltale score: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"scored {n} rows with {args.detector} in {dt:.1f} s -> {out}", file=sys.stderr)
    return 0
