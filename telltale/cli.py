"""The ``telltale`` command line: demo, worker, alerts, notify, silence, detect, score,
replay, spool, ui, report, doctor."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

from telltale import __version__
from telltale.config import Config, ConfigError


def _common_kafka(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", help="bootstrap servers (env TELLTALE_KAFKA)")
    p.add_argument("--topic-prefix", help="topic name prefix (env TELLTALE_TOPIC_PREFIX, "
                   "default 'telltale': telltale.metrics, telltale.alerts, telltale.deadletter)")


def _config(args) -> Config:
    keys = ("kafka", "topic_prefix", "partitions", "app_id", "influx_url", "influx_db",
            "store_dir", "log_level", "data_dir", "web_port")
    over = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if getattr(args, "windows", None):
        over["windows"] = tuple(w.strip() for w in args.windows.split(",") if w.strip())
    return Config.from_env(**over)


# -- demo ---------------------------------------------------------------------------


def cmd_demo(args) -> int:
    from telltale.embedded import format_alert
    from telltale.producers import CallableTransport, Monitor
    from telltale.simulate import DEMO_RUNS, SERVE_RUN, SimRun
    from telltale.sinks.local import LocalStore
    from telltale.streams.embedded import EmbeddedPipeline

    cfg = _config(args)
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

    from telltale.embedded import embedded_notifier
    from telltale.sinks.handlers import ConfigError

    try:
        notifier = embedded_notifier(cfg, store, args.notify_config)
    except ConfigError as exc:
        print(f"telltale demo: {exc}", file=sys.stderr)
        return 2

    def on_alert(a):
        alerts_by_run[a["run"]] += a.get("state") == "firing"
        print(f"  {format_alert(a, verbose=True)}", flush=True)
        if notifier is not None:
            notifier.submit(a)

    pipe = EmbeddedPipeline(cfg, store, on_alert=on_alert)
    try:
        server = _start_ui(args, store_dir) if args.ui else None
    except ValueError as exc:
        print(f"telltale demo --ui: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"telltale demo --ui: {exc}", file=sys.stderr)
        return 1
    print(f"telltale demo: {len(runs)} simulated training runs × {args.steps} steps and one "
          f"inference run (embedded pipeline, no Kafka/InfluxDB; results in {store_dir}/)")
    for r in [*runs, serve]:
        what = f"{r.fault} at step {r.onset}" if r.fault else "clean"
        print(f"  {r.run:14} {what}")
    monitors = {r.run: Monitor(r.run, CallableTransport(pipe.submit), tags={"host": "demo"})
                for r in [*runs, serve]}
    t0 = time.perf_counter()
    logged = _demo_log(runs, monitors, args.steps, args.rate, serve)
    for m in monitors.values():
        m.close()
    pipe.drain()
    pipe.close()
    if notifier is not None:
        print("  delivering the last alerts...", flush=True)
        notifier.close()
        print(f"  notify: {notifier.notifier.counts}")
    store.close()
    dt = time.perf_counter() - t0
    n = pipe.counts["events"]
    print("\nsummary")
    print(f"  events processed: {n} (logged {logged}; end markers {len(monitors)})")
    for r in [*runs, serve]:
        print(f"  {r.run:14} incidents: {alerts_by_run[r.run]}")
    print(f"  incidents: {sum(alerts_by_run.values())} ({pipe.counts['alerts']} alert records: "
          f"firing/updated/resolved), points stored: {pipe.counts['points']}")
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

    ui = args.ui or os.environ.get("TELLTALE_WORKER_UI", "") not in ("", "0")
    if ui:
        print(f"dashboard: http://127.0.0.1:{cfg.web_port}/ui/ (data from InfluxDB)",
              file=sys.stderr, flush=True)
    run_worker(cfg, ui=ui)
    return 0


# -- alerts ---------------------------------------------------------------------------


def _alert_filter(args):
    """A predicate for --run/--metric/--severity/--state (None: show everything)."""
    from fnmatch import fnmatchcase

    from telltale.sinks.handlers import severity_at_least

    states = set(args.state.split(",")) if getattr(args, "state", None) else None

    def keep(rec: dict) -> bool:
        return ((not args.run or fnmatchcase(str(rec.get("run")), args.run))
                and (not getattr(args, "metric", None)
                     or fnmatchcase(str(rec.get("metric")), args.metric))
                and severity_at_least(rec, getattr(args, "severity", None))
                and (states is None or rec.get("state", "firing") in states))
    return keep


def cmd_alerts(args) -> int:
    import uuid

    from kafka import KafkaConsumer
    from kafka.errors import AuthorizationError, KafkaError

    from telltale.embedded import format_alert
    from telltale.sinks.kafka import broker_listening, close_quietly, reconnect

    cfg = _config(args)
    if not cfg.kafka:
        print("telltale alerts reads the alert topic: set TELLTALE_KAFKA or pass --kafka "
              "(embedded runs keep alerts in <store-dir>/alerts.log.jsonl)", file=sys.stderr)
        return 2
    topic = cfg.deadletter_topic if args.deadletter else cfg.alerts_topic
    group = args.group or f"{cfg.topic_prefix}-alerts-tail-{uuid.uuid4().hex[:8]}"

    def connect():
        return KafkaConsumer(
            topic, bootstrap_servers=cfg.kafka, group_id=group, **cfg.kafka_options(),
            auto_offset_reset="earliest" if args.from_beginning else "latest",
            enable_auto_commit=True,
            consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"))

    from telltale.access import check_kafka

    check_kafka(cfg)  # a wrong password or certificate: a clear error now, not a hang
    try:
        consumer = connect()
    except KafkaError:
        print(f"no Kafka broker answers at {cfg.kafka}", file=sys.stderr)
        return 1
    print(f"telltale alerts: reading {topic} as consumer group {group!r} "
          f"(resume from here with --group {group})", file=sys.stderr, flush=True)
    keep = _alert_filter(args)
    from telltale.records import Deduper

    dedup = Deduper()  # a worker that crashed may have sent some records twice
    n = 0
    try:
        while True:
            try:
                for msg in consumer:
                    try:
                        rec = json.loads(msg.value)
                    except ValueError:
                        print(f"skipping an unreadable record at offset {msg.offset}",
                              file=sys.stderr)
                        continue
                    if args.deadletter:
                        if args.run and rec.get("run") not in (None, args.run):
                            continue
                        print(json.dumps(rec) if args.json
                              else f"DEAD-LETTER {rec.get('reason')}", flush=True)
                    else:
                        if not keep(rec) or not dedup.first(rec):
                            continue
                        print(json.dumps(rec) if args.json else format_alert(rec, args.verbose),
                              flush=True)
                    n += 1
                    if args.max and n >= args.max:
                        return 0
                if not broker_listening(cfg.kafka):  # quiet because the broker is gone
                    raise KafkaError(f"nothing listens at {cfg.kafka}")
                return 0  # --timeout: nothing new for that long
            except AuthorizationError as exc:
                print(f"telltale alerts: Kafka user {cfg.kafka_sasl_username!r} may not read "
                      f"{topic} as group {group!r} ({type(exc).__name__}): ask for Read ACLs on "
                      "both, or set TELLTALE_KAFKA_SASL_USERNAME to a reader", file=sys.stderr)
                return 1
            except KafkaError as exc:  # the broker went away: reconnect, resume the group
                print(f"telltale alerts: lost the broker ({type(exc).__name__}); reconnecting",
                      file=sys.stderr, flush=True)
                close_quietly(consumer)
                give_up = time.monotonic() + args.timeout if args.timeout else float("inf")
                consumer = reconnect(connect, give_up=give_up)  # --timeout bounds the wait
                if consumer is None:
                    print(f"telltale alerts: no broker at {cfg.kafka} for {args.timeout:g} s "
                          "(--timeout); giving up. Check that Kafka runs: "
                          "'telltale doctor'", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if consumer is not None:
            close_quietly(consumer)


# -- notify / silence ---------------------------------------------------------------


def _notify_config(args, cfg: Config):
    from telltale.sinks.handlers import NotifyConfig

    path = getattr(args, "config", None) or cfg.notify_config
    if not path:
        raise SystemExit("telltale notify needs a handler configuration: --config FILE or "
                         "TELLTALE_NOTIFY_CONFIG (YAML or JSON; see README 'Delivering alerts')")
    return NotifyConfig.load(path)


def cmd_notify(args) -> int:
    from telltale.sinks.handlers import ConfigError
    from telltale.sinks.notify import run_notify

    cfg = _config(args)
    if not cfg.kafka:
        print("telltale notify consumes the alert topic: set TELLTALE_KAFKA or pass --kafka. "
              "Embedded runs deliver in-process when TELLTALE_NOTIFY_CONFIG is set.",
              file=sys.stderr)
        return 2
    try:
        ncfg = _notify_config(args, cfg)
    except ConfigError as exc:
        print(f"telltale notify: {exc}", file=sys.stderr)
        return 2
    group = args.group or f"{cfg.topic_prefix}-notify"
    print(f"telltale notify: consuming {cfg.alerts_topic} as consumer group {group!r}; "
          f"handlers: {', '.join(ncfg.handlers)}; {len(ncfg.routes)} route(s); silences on "
          f"{cfg.topic_prefix}.silences", file=sys.stderr, flush=True)
    counts = run_notify(cfg, ncfg, group, from_beginning=args.from_beginning,
                        idle_exit=args.idle_exit,
                        echo=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"telltale notify: stopped; {counts}", file=sys.stderr)
    return 0


def _silence_store(cfg: Config):
    if cfg.kafka:
        from telltale.sinks.notify import KafkaSilences

        return KafkaSilences(cfg, refresh=0.0)
    from telltale.sinks.handlers import FileSilences

    return FileSilences(os.path.join(cfg.store_dir, "silences.json"))


def cmd_silence(args) -> int:
    cfg = _config(args)
    if not cfg.kafka:
        return _silence(args, cfg)
    from kafka.errors import AuthorizationError, KafkaError

    from telltale.access import check_kafka

    check_kafka(cfg)  # a wrong password: a clear error, not "no silences"
    topic = f"{cfg.topic_prefix}.silences"
    try:
        return _silence(args, cfg)
    except AuthorizationError as exc:
        need = "Read and Describe" if args.action == "list" else "Read, Write, Describe (and " \
            "Create, for the first silence)"
        print(f"telltale silence: Kafka user {cfg.kafka_sasl_username!r} may not use {topic} "
              f"({type(exc).__name__}): ask for {need} ACLs on it, or set "
              "TELLTALE_KAFKA_SASL_USERNAME to the notifier's principal", file=sys.stderr)
    except KafkaError as exc:
        print(f"telltale silence: Kafka at {cfg.kafka} failed on {topic} "
              f"({type(exc).__name__}: {exc}); nothing was changed", file=sys.stderr)
    return 1


def _silence(args, cfg: Config) -> int:
    from telltale.sinks.handlers import new_silence

    store = _silence_store(cfg)
    where = (f"topic {cfg.topic_prefix}.silences on {cfg.kafka}" if cfg.kafka
             else os.path.join(cfg.store_dir, "silences.json"))
    if args.action == "add":
        try:
            s = new_silence(args.duration, args.comment or "", run=args.run, metric=args.metric,
                            detector=args.detector, severity=args.severity)
        except ValueError as exc:
            print(f"telltale silence: {exc}", file=sys.stderr)
            return 2
        store.add(s)
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.until))
        print(f"{s.id}  silenced until {until} ({where})")
    elif args.action == "list":
        read = getattr(store, "read", store.list)  # Kafka: errors surface, not "none"
        items = sorted(read(), key=lambda x: x.until)
        if args.json:
            for s in items:
                print(json.dumps({**s.to_dict(), "active": s.active()}))
        else:
            if not items:
                print(f"no silences ({where})")
            for s in items:
                m = " ".join(f"{k}={v}" for k, v in (("run", s.run), ("metric", s.metric),
                                                     ("detector", s.detector),
                                                     ("severity<=", s.severity)) if v)
                left = s.until - time.time()
                state = f"{left / 60:.0f} min left" if left > 0 else "expired"
                print(f"{s.id}  {m}  ({state}){'  # ' + s.comment if s.comment else ''}")
    else:
        if not store.remove(args.id):
            print(f"telltale silence: no silence with id {args.id!r} ({where}); "
                  "see 'telltale silence list'", file=sys.stderr)
            return 1
        print(f"removed {args.id}")
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
    rejects: list[dict] = []  # the first few, to show; all are counted

    def on_alert(a):
        out.write(json.dumps(a) + "\n")

    def on_reject(r):
        if len(rejects) < 5:
            rejects.append(r)

    pipe = EmbeddedPipeline(cfg, store=None, on_alert=on_alert, on_reject=on_reject)
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


# -- ui / report ------------------------------------------------------------------------


def _ui_source(args):
    """InfluxDB when --influx-url / TELLTALE_INFLUX_URL is set (and no --store-dir), else
    the local store (the demo's when the default store holds no runs of its own)."""
    from telltale.ui.data import InfluxSource, LocalSource

    cfg = _config(args)
    if cfg.influx_url and not getattr(args, "store_dir", None):
        return InfluxSource(cfg)
    store = args.store_dir or cfg.store_dir
    if not args.store_dir and not os.path.exists(os.path.join(store, "metrics.jsonl")):
        demo = os.path.join(store, "demo")
        if os.path.exists(os.path.join(demo, "metrics.jsonl")):
            store = demo
    return LocalSource(store)


def _ui_guard(args):
    """The dashboard's Host check and auth from --auth-token-file / --basic-auth-file /
    --allow-host; ValueError when --host reaches beyond loopback without an auth option."""
    from telltale.ui.server import Guard, needs_auth, read_secret_file

    if args.auth_token_file and args.basic_auth_file:
        raise ValueError("give one of --auth-token-file and --basic-auth-file, not both")
    token = read_secret_file(args.auth_token_file, "--auth-token-file") \
        if args.auth_token_file else None
    basic = read_secret_file(args.basic_auth_file, "--basic-auth-file") \
        if args.basic_auth_file else None
    guard = Guard(token=token, basic=basic, allowed_hosts=args.allow_host or ())
    if needs_auth(args.host) and guard.auth is None:
        raise ValueError(f"--host {args.host} would serve the dashboard, and whatever its "
                         "InfluxDB credentials can read, to other machines without a password: "
                         "add --auth-token-file FILE (a random token) or --basic-auth-file FILE "
                         "(user:password), or keep the default --host 127.0.0.1")
    return guard


def _start_ui(args, store_dir=None):
    from telltale.ui.data import LocalSource
    from telltale.ui.server import UiServer

    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise OSError("the dashboard needs aiohttp: pip install 'telltale[ui]'") from None

    guard = _ui_guard(args)
    source = LocalSource(store_dir) if store_dir else _ui_source(args)
    server = UiServer(source, host=args.host, port=args.port, guard=guard).start()
    how = {"token": f" (needs the token: open {server.url}?token=<the token in "
                    f"{args.auth_token_file}> once)",
           "basic": " (needs the user and password of --basic-auth-file)"}.get(guard.auth, "")
    print(f"dashboard: {server.url} ({source.describe()}){how}", flush=True)
    return server


def cmd_ui(args) -> int:
    try:
        server = _start_ui(args)
    except ValueError as exc:
        print(f"telltale ui: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"telltale ui: {exc}", file=sys.stderr)
        return 1
    print("open it in a browser; Ctrl-C stops the server", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


def _view_from_events(path: str, run: str, cfg: Config, k: float) -> dict:
    """Run the embedded pipeline over an events file; the view of ``run``."""
    from telltale.streams.embedded import EmbeddedPipeline
    from telltale.ui.data import DataError, MemoryStore, build_view

    if not os.path.isfile(path):
        raise DataError(f"no events file {path}")
    store = MemoryStore()
    pipe = EmbeddedPipeline(cfg, store)
    total, read, last = max(os.path.getsize(path), 1), 0, time.monotonic()
    for r, payload in _read_batches(path):
        read += len(payload)
        pipe.handle(r, payload)
        if time.monotonic() - last > 1.0:
            print(f"report: processing {path}: {read / total:.0%}, "
                  f"{pipe.counts['events']} events", file=sys.stderr, flush=True)
            last = time.monotonic()
    pipe.close()
    if run not in store.points:
        runs = ", ".join(sorted(store.points)) or "none"
        raise DataError(f"run {run!r} is not in {path} (runs there: {runs})")
    return build_view(run, store.points[run], store.alerts.get(run, []), k=k)


def cmd_report(args) -> int:
    from telltale.ui.data import DataError, parse_k
    from telltale.ui.report import render_html, write_pngs

    out = args.out or f"report-{args.run}.html"
    try:
        args.k = parse_k(args.k)
    except ValueError as exc:
        print(f"telltale report: --k: {exc}", file=sys.stderr)
        return 2
    try:
        if args.events:
            view = _view_from_events(args.events, args.run, _config(args), args.k)
            source = f"events file {args.events}"
        else:
            src = _ui_source(args)
            source = src.describe()
            view = src.run_view(args.run, k=args.k)
            if view is None:
                names = ", ".join(sorted(r["run"] for r in src.runs())) or "none"
                raise DataError(f"no run {args.run!r} in {source} (runs there: {names}); "
                                "--events FILE reads a file of events instead")
    except DataError as exc:
        print(f"telltale report: {exc}", file=sys.stderr)
        return 2
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(render_html(view, source))
    except OSError as exc:
        print(f"telltale report: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    s = view["summary"]
    print(f"report: {args.run}: steps {s['first_step']}-{s['last_step']}, "
          f"{len(view['alerts'])} alerts -> {out}", file=sys.stderr)
    if args.png:
        png_dir = out.rsplit(".", 1)[0] + "-png"
        print("report: rendering one PNG per panel in headless Chromium...", file=sys.stderr,
              flush=True)
        try:
            paths = write_pngs(out, png_dir)
        except RuntimeError as exc:
            print(f"telltale report: --png: {exc}", file=sys.stderr)
            return 1
        print(f"report: {len(paths)} PNGs -> {png_dir}/", file=sys.stderr)
    return 0


# -- entry point ---------------------------------------------------------------------


def cmd_doctor(args) -> int:
    from telltale.doctor import diagnose, render

    cfg = _config(args)
    if not args.json:
        print(f"telltale doctor: checking Kafka {cfg.kafka or '(not set)'}, InfluxDB "
              f"{cfg.influx_url or '(not set)'}, topics {cfg.topic_prefix}.*, worker group "
              f"{cfg.app_id!r}...", file=sys.stderr, flush=True)
    checks = diagnose(cfg, data_dir=args.data_dir, max_lag=args.max_lag)
    print(render(checks, args.json, cfg), flush=True)
    return 1 if any(c.status == "fail" for c in checks) else 0


def _ui_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="dashboard address (default 127.0.0.1; "
                   "any other address needs --auth-token-file or --basic-auth-file)")
    p.add_argument("--port", type=int, default=8765,
                   help="dashboard port (default 8765; 0 = any free port)")
    p.add_argument("--auth-token-file", help="require this file's token: open /?token=TOKEN "
                   "once (kept in a cookie) or send 'Authorization: Bearer TOKEN'")
    p.add_argument("--basic-auth-file", help="require HTTP basic auth, user:password from "
                   "this file")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="a host name the dashboard answers to besides localhost and IP "
                   "addresses (the Host header is checked against DNS rebinding); repeatable")


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
    d.add_argument("--notify-config", help="also deliver alerts with these handlers/routes "
                   "(YAML/JSON; env TELLTALE_NOTIFY_CONFIG)")
    d.add_argument("--publish", action="store_true",
                   help="publish the runs to Kafka for a worker instead of running embedded")
    d.add_argument("--ui", action="store_true",
                   help="serve the live dashboard while the demo runs (and after, until Ctrl-C)")
    _ui_address(d)
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
    w.add_argument("--ui", action="store_true", help="serve the live dashboard at "
                   "http://127.0.0.1:PORT/ui/ (env TELLTALE_WORKER_UI=1; PORT from "
                   "--web-port / TELLTALE_WEB_PORT, default 6066)")
    w.add_argument("--web-port", type=int, help="the worker's web server port (default 6066)")
    w.set_defaults(func=cmd_worker)

    a = sub.add_parser("alerts", help="tail the alert topic (filters, pretty or --json)",
                       description="Tail the alert topic as a Kafka consumer group. The group "
                       "name is printed on stderr; pass it as --group to resume where you "
                       "stopped (or to share the work with another consumer).")
    _common_kafka(a)
    a.add_argument("--json", action="store_true", help="one JSON alert record per line")
    a.add_argument("--verbose", "-v", action="store_true",
                   help="pretty output with explanation, likely cause and next step")
    a.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    a.add_argument("--group", help="consumer group id (default: a new one, printed)")
    a.add_argument("--run", help="only runs matching this glob")
    a.add_argument("--metric", help="only metrics matching this glob, e.g. '*loss*'")
    a.add_argument("--severity", choices=("info", "warning", "critical"),
                   help="minimum severity")
    a.add_argument("--state", help="only these states, e.g. firing or firing,resolved")
    a.add_argument("--max", type=int, help="stop after this many alerts")
    a.add_argument("--timeout", type=float, help="stop after this many idle seconds")
    a.add_argument("--deadletter", action="store_true", help="tail the dead-letter topic instead")
    a.set_defaults(func=cmd_alerts)

    n = sub.add_parser("notify", help="deliver alerts from the alert topic to webhooks, Slack, "
                       "e-mail or stdout (routing, silences, retries)",
                       description="Consume the alert topic as a consumer group and deliver "
                       "each alert to the handlers its routes name. Offsets are committed "
                       "only after delivery (at-least-once); handlers that stay down past "
                       "the retries send the alerts to the dead-letter topic.")
    _common_kafka(n)
    n.add_argument("--config", help="handlers and routes, YAML or JSON "
                   "(env TELLTALE_NOTIFY_CONFIG)")
    n.add_argument("--group", help="consumer group (default <prefix>-notify)")
    n.add_argument("--from-beginning", action="store_true",
                   help="a new group starts at the oldest alert instead of the newest")
    n.add_argument("--idle-exit", type=float, help="stop after this many seconds without alerts")
    n.set_defaults(func=cmd_notify)

    si = sub.add_parser("silence", help="add, list or remove alert silences",
                        description="Silences suppress matching alerts in every notifier "
                        "until they expire. Kafka mode keeps them on the compacted topic "
                        "<prefix>.silences; embedded mode in <store-dir>/silences.json.")
    common = argparse.ArgumentParser(add_help=False)
    _common_kafka(common)
    common.add_argument("--store-dir", help="embedded mode's store (default telltale-data)")
    ssub = si.add_subparsers(dest="action", required=True)
    sa = ssub.add_parser("add", help="silence matching alerts for a while", parents=[common])
    sa.add_argument("--for", dest="duration", default="1h",
                    help="how long: 90s, 15m, 2h, 1d (default 1h)")
    sa.add_argument("--run", help="run glob")
    sa.add_argument("--metric", help="metric glob")
    sa.add_argument("--detector", help="detector glob")
    sa.add_argument("--severity", help="silence alerts up to this severity")
    sa.add_argument("--comment", help="why (shown by list)")
    sl = ssub.add_parser("list", help="show silences", parents=[common])
    sl.add_argument("--json", action="store_true")
    sr = ssub.add_parser("remove", help="remove a silence by id", parents=[common])
    sr.add_argument("id")
    si.set_defaults(func=cmd_silence)

    t = sub.add_parser("detect", help="run the embedded pipeline over a JSONL file of events")
    t.add_argument("events", help="events file (one JSON event per line)")
    t.add_argument("--out", help="alerts file (JSONL; default stdout)")
    t.add_argument("--windows", help="window specs")
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

    u = sub.add_parser("ui", help="live dashboard on 127.0.0.1: runs, charts, alerts",
                       description="Serve the live dashboard. Data comes from InfluxDB when "
                       "--influx-url / TELLTALE_INFLUX_URL is set, else from the local store "
                       "(embedded mode; the demo's store when the default one is empty).")
    _ui_address(u)
    u.add_argument("--store-dir", help="local store to show (default telltale-data, or "
                   "telltale-data/demo after 'telltale demo')")
    u.add_argument("--influx-url", help="InfluxDB URL (env TELLTALE_INFLUX_URL)")
    u.add_argument("--influx-db", help="database (env TELLTALE_INFLUX_DB, default telltale)")
    u.set_defaults(func=cmd_ui)

    rp = sub.add_parser("report", help="one run as a self-contained HTML report (--png too)",
                        description="Write one run's summary, charts and alerts as a single "
                        "HTML file that opens with no server. Data: --events FILE (run "
                        "through the embedded pipeline), else InfluxDB or the local store "
                        "as for 'telltale ui'.")
    rp.add_argument("run", help="run id")
    rp.add_argument("--out", help="HTML file (default report-RUN.html)")
    rp.add_argument("--png", action="store_true",
                    help="also one PNG per panel in OUT-png/ (headless Chromium)")
    rp.add_argument("--events", help="JSONL events file (the trainfaults format)")
    rp.add_argument("--k", default="3", help="band width: mean ± k·std, 0 < k ≤ 20 (default 3)")
    rp.add_argument("--store-dir", help="local store to read")
    rp.add_argument("--influx-url", help="InfluxDB URL (env TELLTALE_INFLUX_URL)")
    rp.add_argument("--influx-db", help="database (env TELLTALE_INFLUX_DB, default telltale)")
    rp.add_argument("--windows", help="window specs (with --events)")
    rp.set_defaults(func=cmd_report)

    r = sub.add_parser("replay", help="publish a JSONL file of events with the producer library")
    r.add_argument("events")
    _common_kafka(r)
    r.set_defaults(func=cmd_replay)

    dr = sub.add_parser(
        "doctor", help="check a Kafka-mode deployment and say what is wrong",
        description="Check the broker (reachable, credentials accepted), Telltale's topics and "
        "partition counts, the worker group's consumer lag, dead-letter messages, InfluxDB "
        "(health, credentials, database, retention policy) and, with --data-dir, the worker's "
        "status file. Exit 0 when healthy, 1 when something is wrong. Credentials come from "
        "the same TELLTALE_* variables the worker uses; no secret is ever printed.")
    _common_kafka(dr)
    dr.add_argument("--influx-url", help="InfluxDB URL (env TELLTALE_INFLUX_URL)")
    dr.add_argument("--influx-db", help="database (env TELLTALE_INFLUX_DB, default telltale)")
    dr.add_argument("--app-id", help="the worker's consumer group (env TELLTALE_APP_ID, "
                    "default telltale-worker)")
    dr.add_argument("--partitions", type=int, help="expected partitions per topic (default 4)")
    dr.add_argument("--data-dir", help="a worker's data dir: also check its status file")
    dr.add_argument("--max-lag", type=int, default=10_000,
                    help="lag (messages) above which the worker counts as behind (default 10000)")
    dr.add_argument("--json", action="store_true", help="one JSON document instead of text")
    dr.set_defaults(func=cmd_doctor)

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
    # what telltale writes (worker data and spill, stores, spools, reports) is its owner's only
    os.umask(os.umask(0o077) | 0o077)
    try:
        return args.func(args)
    except ConnectionError as exc:
        print(f"telltale: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"telltale: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"telltale: {exc.code}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
