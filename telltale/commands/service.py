"""Kafka mode's service commands: ``worker``, ``doctor``, and the producer side's
``replay`` and ``spool``."""

from __future__ import annotations

import json
import sys
import time

from telltale.commands.flags import INFLUX, KAFKA
from telltale.config import add_flag, add_flags, from_args
from telltale.extras import require


def add(sub) -> None:
    w = sub.add_parser("worker", parents=[KAFKA, INFLUX], help="run a Faust worker: metrics "
                       "topic -> detectors -> InfluxDB and the alert topic")
    add_flags(w, "partitions", "app_id", "data_dir", "windows", "log_level", "web_port")
    w.add_argument("--ui", action="store_true", help="serve the live dashboard at "
                   "http://127.0.0.1:PORT/ui/ (env TELLTALE_WORKER_UI=1; PORT from "
                   "--web-port / TELLTALE_WEB_PORT, default 6066)")
    w.set_defaults(func=cmd_worker)

    dr = sub.add_parser(
        "doctor", parents=[KAFKA, INFLUX],
        help="check a Kafka-mode deployment and say what is wrong",
        description="Check the broker (reachable, credentials accepted), Telltale's topics and "
        "partition counts, the worker group's consumer lag, dead-letter messages, InfluxDB "
        "(health, credentials, database, retention policy) and, with --data-dir, the worker's "
        "status file. Exit 0 when healthy, 1 when something is wrong. Credentials come from "
        "the same TELLTALE_* variables the worker uses; no secret is ever printed.")
    add_flag(dr, "app_id", "the worker's consumer group")
    add_flag(dr, "partitions", "expected partitions per topic")
    dr.add_argument("--data-dir", help="a worker's data dir: also check its status file")
    dr.add_argument("--max-lag", type=int, default=10_000,
                    help="lag (messages) above which the worker counts as behind (default 10000)")
    dr.add_argument("--json", action="store_true", help="one JSON document instead of text")
    dr.set_defaults(func=cmd_doctor)

    r = sub.add_parser("replay", parents=[KAFKA],
                       help="publish a JSONL file of events with the producer library")
    r.add_argument("events")
    r.set_defaults(func=cmd_replay)

    s = sub.add_parser("spool", parents=[KAFKA], help="list (or --send) events that trainers "
                       "spooled to disk while the broker was away")
    add_flag(s, "spool_dir", flag="--dir")
    s.add_argument("--send", action="store_true", help="send them to Kafka now, in order")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per spool "
                   "(default 120)")
    s.set_defaults(func=cmd_spool)


def cmd_worker(args) -> int:
    require("worker", "telltale worker")
    cfg = from_args(args)
    if not cfg.kafka:
        print("telltale worker needs a Kafka broker: set TELLTALE_KAFKA or pass --kafka "
              "(for a broker on this machine: scripts/services.sh start). Without Kafka, "
              "'telltale demo' or 'telltale detect FILE' run the same pipeline embedded.",
              file=sys.stderr)
        return 2
    from telltale.streams.app import run_worker
    from telltale.streams.processor import RunProcessor

    RunProcessor(cfg)  # windows, pipelines and alert policy: a ConfigError now, not later
    ui = args.ui or cfg.worker_ui
    if ui:
        print(f"dashboard: http://127.0.0.1:{cfg.web_port}/ui/ (data from InfluxDB)",
              file=sys.stderr, flush=True)
    run_worker(cfg, ui=ui)
    return 0


def cmd_doctor(args) -> int:
    from telltale.doctor import diagnose, render

    cfg = from_args(args)
    if not args.json:
        print(f"telltale doctor: checking Kafka {cfg.kafka or '(not set)'}, InfluxDB "
              f"{cfg.influx_url or '(not set)'}, topics {cfg.topic_prefix}.*, worker group "
              f"{cfg.app_id!r}...", file=sys.stderr, flush=True)
    checks = diagnose(cfg, data_dir=args.data_dir, max_lag=args.max_lag)
    print(render(checks, args.json, cfg), flush=True)
    return 1 if any(c.status == "fail" for c in checks) else 0


def cmd_replay(args) -> int:
    """Publish a file of events through the producer library (to Kafka when configured)."""
    import telltale

    cfg = from_args(args)
    monitors: dict = {}
    n = 0
    with open(args.events) as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            mon = monitors.get(d["run"])
            if mon is None:
                mon = monitors[d["run"]] = telltale.init(d["run"], config=cfg)
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

    cfg = from_args(args)
    directory = cfg.spool_dir
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
