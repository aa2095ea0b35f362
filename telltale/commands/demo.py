"""``telltale demo``: simulated training runs with injected faults, through the embedded
pipeline (or, with ``--publish``, to Kafka for a worker)."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

from telltale.commands.flags import KAFKA, UI_ADDRESS
from telltale.config import Config, ConfigError, add_flag, from_args


def add(sub) -> None:
    d = sub.add_parser("demo", parents=[KAFKA, UI_ADDRESS],
                       help="simulated training runs with injected faults, through the "
                       "embedded pipeline (no services needed)")
    d.add_argument("--steps", type=int, default=600, help="steps per run (default 600)")
    d.add_argument("--rate", type=float, default=300.0,
                   help="simulated steps per second per run (default 300; 0 = flat out)")
    add_flag(d, "store_dir", "where results go (default STORE_DIR/demo)")
    add_flag(d, "windows")
    add_flag(d, "notify_config", "also deliver alerts with these handlers/routes",
             flag="--notify-config")
    d.add_argument("--publish", action="store_true",
                   help="publish the runs to Kafka for a worker instead of running embedded")
    d.add_argument("--ui", action="store_true",
                   help="serve the live dashboard while the demo runs (and after, until Ctrl-C)")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from telltale.commands.views import start_ui_or_say
    from telltale.embedded import format_alert
    from telltale.producers import CallableTransport, Monitor
    from telltale.simulate import DEMO_RUNS, SERVE_RUN, SimRun
    from telltale.sinks.local import LocalStore
    from telltale.streams.embedded import EmbeddedDriver

    cfg = from_args(args)
    runs = [SimRun(r.run, r.fault, r.onset, steps=args.steps, seed=r.seed) for r in DEMO_RUNS]
    s = SERVE_RUN
    serve = SimRun(s.run, s.fault, s.onset, steps=args.steps, seed=s.seed)
    if args.publish:
        return _demo_publish(cfg, args, runs, serve)
    store_dir = args.store_dir or os.path.join(cfg.store_dir, "demo")
    if os.path.isdir(store_dir):
        for name in os.listdir(store_dir):
            if name.endswith(".jsonl"):
                os.remove(os.path.join(store_dir, name))
    store = LocalStore(store_dir)
    alerts_by_run: Counter = Counter()

    def on_alert(a):
        alerts_by_run[a["run"]] += a.get("state") == "firing"
        print(f"  {format_alert(a, verbose=True)}", flush=True)

    try:
        driver = EmbeddedDriver(cfg, store, on_alert=on_alert, notify=True)
    except ConfigError as exc:
        print(f"telltale demo: {exc}", file=sys.stderr)
        return 2
    server = None
    if args.ui:
        server, rc = start_ui_or_say(args, "demo --ui", store_dir)
        if server is None:
            return rc
    print(f"telltale demo: {len(runs)} simulated training runs × {args.steps} steps and one "
          f"inference run (embedded pipeline, no Kafka/InfluxDB; results in {store_dir}/)")
    for r in [*runs, serve]:
        what = f"{r.fault} at step {r.onset}" if r.fault else "clean"
        print(f"  {r.run:14} {what}")
    monitors = {r.run: Monitor(r.run, CallableTransport(driver.submit), tags={"host": "demo"})
                for r in [*runs, serve]}
    t0 = time.perf_counter()
    logged = _demo_log(runs, monitors, args.steps, args.rate, serve)
    for m in monitors.values():
        m.close()
    driver.close(say=lambda m: print(f"  {m}", flush=True))
    if driver.notifier is not None:
        print(f"  notify: {driver.notifier.notifier.counts}")
    dt = time.perf_counter() - t0
    counts = driver.counts
    n = counts["events"]
    print("\nsummary")
    print(f"  events processed: {n} (logged {logged}; end markers {len(monitors)})")
    for r in [*runs, serve]:
        print(f"  {r.run:14} incidents: {alerts_by_run[r.run]}")
    print(f"  incidents: {sum(alerts_by_run.values())} ({counts['alerts']} alert records: "
          f"firing/updated/resolved), points stored: {counts['points']}")
    pace = f"paced at {args.rate:g} steps/s" if args.rate else "flat out"
    print(f"  throughput: {n / dt:,.0f} events/s over {dt:.2f} s ({pace})")
    print(f"  store: {store_dir}/ (metrics, window_stats, scores, alerts; alerts.log.jsonl)")
    if server is not None:
        print(f"dashboard still up at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        finally:
            server.stop()
    return 0


def _demo_publish(cfg: Config, args, runs, serve) -> int:
    """Publish the simulated runs to Kafka, for a running worker to process."""
    from telltale.producers import KafkaTransport, Monitor

    if not cfg.kafka:
        print("--publish needs a broker: set TELLTALE_KAFKA or pass --kafka", file=sys.stderr)
        return 2
    print(f"telltale demo: publishing {len(runs)} simulated runs to {cfg.metrics_topic} "
          f"on {cfg.kafka}; see the alerts with 'telltale alerts'")
    monitors = {r.run: Monitor(r.run, KafkaTransport(cfg.kafka, cfg.metrics_topic,
                                                               **cfg.kafka_options()),
                               tags={"host": "demo"}) for r in [*runs, serve]}
    logged = _demo_log(runs, monitors, args.steps, args.rate, serve)
    for m in monitors.values():
        m.close(timeout=60)
    undelivered = sum(m.stats()["queued"] for m in monitors.values())
    print(f"published {logged - undelivered} of {logged} events")
    return 0 if undelivered == 0 else 1


def _demo_log(runs, monitors, steps: int, rate: float, serve=None) -> int:
    """Log the simulated runs step by step (paced at ``rate`` steps/s); returns events.

    Besides train/eval events: system events per rank, and ``serve``'s inference events.
    """
    from telltale.simulate import simulate, simulate_serve, simulate_system

    gens = {r.run: simulate(r) for r in runs}
    side = {r.run: simulate_system(r) for r in runs}
    if serve is not None:
        side[serve.run] = simulate_serve(serve)
    pending = {run: next(g, None) for run, g in side.items()}
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
        for run, g in side.items():
            while pending[run] is not None and pending[run][0] <= step:
                s, ts, tags, metrics = pending[run]
                kind = "infer" if serve is not None and run == serve.run else "system"
                monitors[run].log(metrics, step=s, kind=kind, ts=ts, tags=tags)
                logged += 1
                pending[run] = next(g, None)
        if rate:
            time.sleep(max(0.0, t0 + step / rate - time.perf_counter()))
        now = time.perf_counter()
        if now >= next_report or step == steps:
            print(f"  progress: step {step}/{steps}, {logged} events logged", flush=True)
            next_report = now + 1.0
    return logged
