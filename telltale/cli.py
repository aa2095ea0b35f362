"""The ``telltale`` command line: the parser, :func:`main`, and ``telltale alerts``; the
other commands are in :mod:`telltale.commands` (demo, service: worker, doctor, replay,
spool; notify: notify, silence; files: detect, score; views: ui, report)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from telltale import __version__
from telltale.commands import demo, files, notify, service, views
from telltale.commands.flags import KAFKA
from telltale.config import Config, ConfigError, from_args
from telltale.extras import MissingExtra, extra_of


def _config(args) -> Config:
    """The settings: the environment, then the flags given."""
    return from_args(args)


# -- alerts ---------------------------------------------------------------------------


def _alert_filter(args):
    """A predicate for --run/--metric/--severity/--state (None: show everything)."""
    from fnmatch import fnmatchcase

    from telltale.sinks.routes import severity_at_least

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
            consumer_timeout_ms=int(args.timeout * 1000) if args.timeout else float("inf"),
            # one attempt to reach a broker (30 s by default) stays within --timeout
            bootstrap_timeout_ms=int(min(args.timeout or 30, 30) * 1000))

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


def _add_alerts(sub) -> None:
    a = sub.add_parser("alerts", parents=[KAFKA],
                       help="tail the alert topic (filters, pretty or --json)",
                       description="Tail the alert topic as a Kafka consumer group. The group "
                       "name is printed on stderr; pass it as --group to resume where you "
                       "stopped (or to share the work with another consumer).")
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


# -- entry point ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telltale", description=(
        "Telltale: real-time anomaly detection for model training and inference.\n"
        "With TELLTALE_KAFKA set, producers publish to Kafka and `telltale worker` processes;\n"
        "without it, `telltale demo`, `detect` and `score` run the same pipeline embedded."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"telltale {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    demo.add(sub)
    service.add(sub)  # worker, doctor, replay, spool
    _add_alerts(sub)
    notify.add(sub)  # notify, silence
    files.add(sub)  # detect, score
    views.add(sub)  # ui, report
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
    except MissingExtra as exc:
        msg = str(exc)
        print(msg if msg.startswith("telltale") else f"telltale {args.cmd}: {msg}",
              file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra's module, imported deeper down
        extra = extra_of(exc.name)
        if extra is None:
            raise
        print(f"telltale {args.cmd} needs the {extra} extra (no module {exc.name!r}): "
              f"pip install 'telltale[{extra}]'", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"telltale: {exc.code}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
