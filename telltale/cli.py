"""The ``telltale`` command line: demo, worker, alerts, detect, score, replay, spool."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

from telltale import __version__
from telltale.config import Config


def _common_kafka(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", help="bootstrap servers (env TELLTALE_KAFKA)")
    p.add_argument("--topic-prefix", help="topic name prefix (env TELLTALE_TOPIC_PREFIX, "
                   "default 'telltale': telltale.metrics, telltale.alerts, telltale.deadletter)")


def _config(args) -> Config:
    keys = ("kafka", "topic_prefix", "partitions", "app_id", "influx_url", "influx_db",
            "store_dir", "log_level", "data_dir")
    over = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "windows", None):
        over["windows"] = tuple(w.strip() for w in args.windows.split(",") if w.strip())
    return Config.from_env(**over)


# -- demo ---------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from telltale.embedded import format_alert
    from telltale.producers import CallableTransport, Monitor
    from telltale.simulate import DEMO_RUNS, SimRun
    from telltale.sinks.local import LocalStore
    from telltale.streams.embedded import EmbeddedPipeline

    cfg = _config(args)
    runs = [SimRun(r.run, r.fault, r.onset, steps=args.steps, seed=r.seed) for r in DEMO_RUNS]
    if args.publish:
        return _demo_publish(cfg, args, runs)
    store_dir = args.store_dir or os.path.join(cfg.store_dir, "demo")
    if os.path.isdir(store_dir):
        for name in os.listdir(store_dir):
            if name.endswith(".jsonl"):
                os.remove(os.path.join(store_dir, name))
    store = LocalStore(store_dir)
    alerts_by_run: Counter = Counter()

    def on_alert(a):
        alerts_by_run[a["run"]] += 1
        print(f"  ALERT {format_alert(a)}", flush=True)

    pipe = EmbeddedPipeline(cfg, store, on_alert=on_alert)
    print(f"telltale demo: {len(runs)} simulated training runs × {args.steps} steps "
          f"(embedded pipeline, no Kafka/InfluxDB; results in {store_dir}/)")
    for r in runs:
        what = f"{r.fault} at step {r.onset}" if r.fault else "clean"
        print(f"  {r.run:14} {what}")
    monitors = {r.run: Monitor(r.run, CallableTransport(pipe.submit), tags={"host": "demo"})
                for r in runs}
    t0 = time.perf_counter()
    logged = _demo_log(runs, monitors, args.steps, args.rate)
    for m in monitors.values():
        m.close()
    pipe.drain()
    pipe.close()
    store.close()
    dt = time.perf_counter() - t0
    n = pipe.counts["events"]
    print("\nsummary")
    print(f"  events processed: {n} (logged {logged}; end markers {len(runs)})")
    for r in runs:
        print(f"  {r.run:14} alerts: {alerts_by_run[r.run]}")
    print(f"  alerts: {sum(alerts_by_run.values())}, points stored: {pipe.counts['points']}")
    pace = f"paced at {args.rate:g} steps/s" if args.rate else "flat out"
    print(f"  throughput: {n / dt:,.0f} events/s over {dt:.2f} s ({pace})")
    print(f"  store: {store_dir}/ (metrics, window_stats, scores, alerts; alerts.log.jsonl)")
    return 0


def _demo_publish(cfg: Config, args, runs) -> int:
    """Publish the simulated runs to Kafka, for a running worker to process."""
    from telltale.producers import KafkaTransport, Monitor

    if not cfg.kafka:
        print("--publish needs a broker: set TELLTALE_KAFKA or pass --kafka", file=sys.stderr)
        return 2
    print(f"telltale demo: publishing {len(runs)} simulated runs to {cfg.metrics_topic} "
          f"on {cfg.kafka}; see the alerts with 'telltale alerts'")
    monitors = {r.run: Monitor(r.run, KafkaTransport(cfg.kafka, cfg.metrics_topic),
                               tags={"host": "demo"}) for r in runs}
    logged = _demo_log(runs, monitors, args.steps, args.rate)
    for m in monitors.values():
        m.close(timeout=60)
    undelivered = sum(m.stats()["queued"] for m in monitors.values())
    print(f"published {logged - undelivered} of {logged} events")
    return 0 if undelivered == 0 else 1


def _demo_log(runs, monitors, steps: int, rate: float) -> int:
    """Log the simulated runs step by step (paced at ``rate`` steps/s); returns events."""
    from telltale.simulate import simulate

    gens = {r.run: simulate(r) for r in runs}
    t0 = time.perf_counter()
    logged = 0
    next_report = t0
    for step in range(1, steps + 1):
        for run, gen in gens.items():
            for _ in range(2):  # train event and, at eval steps, the eval event
                ev = next(gen, None)
                if ev is None:
                    break
                s, ts, kind, metrics = ev
                monitors[run].log(metrics, step=s, kind=kind, ts=ts)
                logged += 1
                if kind == "train" and s % 20 != 0:
                    break
        if rate:
            time.sleep(max(0.0, t0 + step / rate - time.perf_counter()))
        now = time.perf_counter()
        if now >= next_report or step == steps:
            print(f"  progress: step {step}/{steps}, {logged} events logged", flush=True)
            next_report = now + 1.0
    return logged


# -- worker ---------------------------------------------------------------------------


def cmd_worker(args) -> int:
    cfg = _config(args)
    if not cfg.kafka:
        print("telltale worker needs a Kafka broker: set TELLTALE_KAFKA or pass --kafka "
              "(for a broker on this machine: scripts/services.sh start). Without Kafka, "
              "'telltale demo' or 'telltale detect FILE' run the same pipeline embedded.",
              file=sys.stderr)
        return 2
    from telltale.streams.app import run_worker

    run_worker(cfg)
    return 0


# -- alerts ---------------------------------------------------------------------------


def cmd_alerts(args) -> int:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from telltale.embedded import format_alert

    cfg = _config(args)
    if not cfg.kafka:
        print("telltale alerts reads the alert topic: set TELLTALE_KAFKA or pass --kafka",
              file=sys.stderr)
        return 2
    topic = cfg.deadletter_topic if args.deadletter else cfg.alerts_topic
    try:
        consumer = KafkaConsumer(
            topic, bootstrap_servers=cfg.kafka, group_id=args.group,
            auto_offset_reset="earliest" if args.from_beginning else "latest",
            enable_auto_commit=args.group is not None,
            consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"))
    except KafkaError:
        print(f"no Kafka broker answers at {cfg.kafka}", file=sys.stderr)
        return 1
    n = 0
    try:
        for msg in consumer:
            rec = json.loads(msg.value)
            if args.run and rec.get("run") != args.run:
                continue
            if args.deadletter:
                print(json.dumps(rec) if args.json else f"DEAD-LETTER {rec.get('reason')}",
                      flush=True)
            else:
                print(json.dumps(rec) if args.json else format_alert(rec), flush=True)
            n += 1
            if args.max and n >= args.max:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


# -- detect / replay ----------------------------------------------------------------


def _read_batches(path: str, batch: int = 500):
    """Yield (run, [event dicts]) in file order, one run per batch."""
    from telltale.schema import encode_batch

    cur_run, buf = None, []
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
                run = d.get("run") if isinstance(d, dict) else None
            except ValueError:
                run, d = None, None
            if not isinstance(run, str) or d is None:
                if buf:
                    yield cur_run, encode_batch(cur_run, buf)
                    cur_run, buf = None, []
                yield None, line  # let the decoder reject it with a reason
                continue
            if run != cur_run or len(buf) >= batch:
                if buf:
                    yield cur_run, encode_batch(cur_run, buf)
                cur_run, buf = run, []
            d = {k: v for k, v in d.items() if k != "run"}
            buf.append(d)
    if buf:
        yield cur_run, encode_batch(cur_run, buf)


def cmd_detect(args) -> int:
    from telltale.streams.embedded import EmbeddedPipeline

    cfg = _config(args)
    out = open(args.out, "w") if args.out else sys.stdout
    total = os.path.getsize(args.events)
    read = 0
    rejects: list[dict] = []

    def on_alert(a):
        out.write(json.dumps(a) + "\n")

    pipe = EmbeddedPipeline(cfg, store=None, on_alert=on_alert, on_reject=rejects.append)
    t0 = last = time.perf_counter()
    for run, payload in _read_batches(args.events):
        read += len(payload)
        pipe.handle(run, payload)
        now = time.perf_counter()
        if args.out and now - last > 1.0:
            print(f"\rdetect: {read / max(total, 1):6.1%} {pipe.counts['events']} events, "
                  f"{pipe.counts['alerts']} alerts", end="", file=sys.stderr, flush=True)
            last = now
    pipe.close()
    if args.out:
        out.close()
        dt = time.perf_counter() - t0
        print(f"\rdetect: {pipe.counts['events']} events, {pipe.counts['alerts']} alerts, "
              f"{len(rejects)} rejected, {pipe.counts['events'] / dt:,.0f} events/s "
              f"-> {args.out}", file=sys.stderr)
    for r in rejects[:5]:
        print(f"rejected: {r['reason']}", file=sys.stderr)
    return 0


def cmd_score(args) -> int:
    from telltale.score import score_csv

    out = args.out or args.series.rsplit(".", 1)[0] + ".scores.csv"
    try:
        n = score_csv(args.series, out)
    except (OSError, ValueError) as exc:
        print(f"telltale score: {exc}", file=sys.stderr)
        return 2
    print(f"scored {n} rows -> {out}", file=sys.stderr)
    return 0


def cmd_replay(args) -> int:
    """Publish a file of events through the producer library (to Kafka when configured)."""
    import telltale

    cfg = _config(args)
    monitors: dict = {}
    n = 0
    with open(args.events) as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            mon = monitors.get(d["run"])
            if mon is None:
                mon = monitors[d["run"]] = telltale.init(d["run"], broker=cfg.kafka)
            mon.log(d["metrics"], step=d["step"], kind=d.get("kind", "train"), ts=d.get("ts"),
                    tags=d.get("tags"))
            n += 1
    deadline = time.monotonic() + 60
    for m in monitors.values():
        m.flush(timeout=max(0.0, deadline - time.monotonic()))
    for m in monitors.values():
        m.close(timeout=max(0.1, deadline - time.monotonic()))
    print(f"replayed {n} events of {len(monitors)} runs", file=sys.stderr)
    return 0


def cmd_spool(args) -> int:
    """List spooled (undelivered) batches of crashed or disconnected trainers; --send them."""
    from telltale.producers import KafkaTransport, Monitor
    from telltale.producers.spool import Spool, pending_spools

    cfg = _config(args)
    directory = args.dir or cfg.spool_dir
    spools = pending_spools(directory)
    if not spools:
        print(f"no undelivered events in {directory}")
        return 0
    for s in spools:
        print(f"  {s['run']:30} rank {s['rank']:4} {s['events']:>9} events "
              f"{s['bytes'] / 1e6:8.2f} MB  {s['path']}")
    if not args.send:
        print(f"{len(spools)} spool(s); send them with: telltale spool --send (needs "
              "TELLTALE_KAFKA or --kafka)")
        return 0
    if not cfg.kafka:
        print("telltale spool --send needs a broker: set TELLTALE_KAFKA or pass --kafka",
              file=sys.stderr)
        return 2
    failed = 0
    for s in spools:
        sp = Spool(directory, s["run"], s["rank"])
        mon = Monitor(s["run"], KafkaTransport(cfg.kafka, cfg.metrics_topic,
                                               **cfg.kafka_options()), spool=sp)
        print(f"sending {s['events']} events of {s['run']} (rank {s['rank']}) ...", flush=True)
        ok = mon.flush(timeout=args.timeout)
        mon.close(timeout=5.0, end=False)
        if not ok:
            failed += 1
            print(f"  not all sent: {mon.stats()['last_error']}", file=sys.stderr)
    return 1 if failed else 0


# -- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telltale", description=(
        "Telltale: real-time anomaly detection for model training and inference.\n"
        "With TELLTALE_KAFKA set, producers publish to Kafka and `telltale worker` processes;\n"
        "without it, `telltale demo`, `detect` and `score` run the same pipeline embedded."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"telltale {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="simulated training runs with injected faults, "
                       "through the embedded pipeline (no services needed)")
    d.add_argument("--steps", type=int, default=600, help="steps per run (default 600)")
    d.add_argument("--rate", type=float, default=300.0,
                   help="simulated steps per second per run (default 300; 0 = flat out)")
    d.add_argument("--store-dir", help="where results go (default telltale-data/demo)")
    d.add_argument("--windows", help="window specs, e.g. step:100,step:100/50,time:60s")
    d.add_argument("--publish", action="store_true",
                   help="publish the runs to Kafka for a worker instead of running embedded")
    _common_kafka(d)
    d.set_defaults(func=cmd_demo)

    w = sub.add_parser("worker", help="run a Faust worker: metrics topic -> detectors -> "
                       "InfluxDB and the alert topic")
    _common_kafka(w)
    w.add_argument("--influx-url", help="InfluxDB URL (env TELLTALE_INFLUX_URL); "
                   "token from TELLTALE_INFLUX_TOKEN")
    w.add_argument("--influx-db", help="database (env TELLTALE_INFLUX_DB, default telltale)")
    w.add_argument("--partitions", type=int, help="partitions of new topics (default 4)")
    w.add_argument("--app-id", help="Faust app id = consumer group (default telltale-worker)")
    w.add_argument("--data-dir", help="worker's local data dir (default .telltale-worker)")
    w.add_argument("--windows", help="window specs, e.g. step:100,step:100/50,time:60s")
    w.add_argument("--log-level", help="debug|info|warning|error (default warning)")
    w.set_defaults(func=cmd_worker)

    a = sub.add_parser("alerts", help="tail the alert topic")
    _common_kafka(a)
    a.add_argument("--json", action="store_true", help="one JSON alert per line")
    a.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    a.add_argument("--group", help="consumer group id (commits offsets; resumes where it left)")
    a.add_argument("--run", help="only this run")
    a.add_argument("--max", type=int, help="stop after this many alerts")
    a.add_argument("--timeout", type=float, help="stop after this many idle seconds")
    a.add_argument("--deadletter", action="store_true", help="tail the dead-letter topic instead")
    a.set_defaults(func=cmd_alerts)

    t = sub.add_parser("detect", help="run the embedded pipeline over a JSONL file of events")
    t.add_argument("events", help="events file (one JSON event per line)")
    t.add_argument("--out", help="alerts file (JSONL; default stdout)")
    t.add_argument("--windows", help="window specs")
    t.set_defaults(func=cmd_detect)

    c = sub.add_parser("score", help="online anomaly scores (0..1) for a timestamp,value CSV")
    c.add_argument("series", help="CSV with columns timestamp,value")
    c.add_argument("--out", help="output CSV timestamp,value,anomaly_score "
                   "(default SERIES.scores.csv)")
    c.set_defaults(func=cmd_score)

    r = sub.add_parser("replay", help="publish a JSONL file of events with the producer library")
    r.add_argument("events")
    _common_kafka(r)
    r.set_defaults(func=cmd_replay)

    s = sub.add_parser("spool", help="list (or --send) events that trainers spooled to disk "
                       "while the broker was away")
    s.add_argument("--dir", help="spool directory (env TELLTALE_SPOOL_DIR, default "
                   "~/.cache/telltale/spool)")
    s.add_argument("--send", action="store_true", help="send them to Kafka now, in order")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per spool "
                   "(default 120)")
    _common_kafka(s)
    s.set_defaults(func=cmd_spool)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConnectionError as exc:
        print(f"telltale: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
