"""``telltale notify`` (deliver alerts from the alert topic) and ``telltale silence``."""

from __future__ import annotations

import json
import os
import sys
import time

from telltale.commands.flags import KAFKA, STORE
from telltale.config import Config, ConfigError, add_flag, from_args


def add(sub) -> None:
    n = sub.add_parser("notify", parents=[KAFKA],
                       help="deliver alerts from the alert topic to webhooks, Slack, "
                       "e-mail or stdout (routing, silences, retries)",
                       description="Consume the alert topic as a consumer group and deliver "
                       "each alert to the handlers its routes name. Offsets are committed "
                       "only after delivery (at-least-once); handlers that stay down past "
                       "the retries send the alerts to the dead-letter topic.")
    add_flag(n, "notify_config", flag="--config")
    n.add_argument("--group", help="consumer group (default <prefix>-notify)")
    n.add_argument("--from-beginning", action="store_true",
                   help="a new group starts at the oldest alert instead of the newest")
    n.add_argument("--idle-exit", type=float, help="stop after this many seconds without alerts")
    n.set_defaults(func=cmd_notify)

    si = sub.add_parser("silence", help="add, list or remove alert silences",
                        description="Silences suppress matching alerts in every notifier "
                        "until they expire. Kafka mode keeps them on the compacted topic "
                        "<prefix>.silences; embedded mode in <store-dir>/silences.json.")
    ssub = si.add_subparsers(dest="action", required=True)
    sa = ssub.add_parser("add", help="silence matching alerts for a while",
                         parents=[KAFKA, STORE])
    sa.add_argument("--for", dest="duration", default="1h",
                    help="how long: 90s, 15m, 2h, 1d (default 1h)")
    sa.add_argument("--run", help="run glob")
    sa.add_argument("--metric", help="metric glob")
    sa.add_argument("--detector", help="detector glob")
    sa.add_argument("--severity", help="silence alerts up to this severity")
    sa.add_argument("--comment", help="why (shown by list)")
    sl = ssub.add_parser("list", help="show silences", parents=[KAFKA, STORE])
    sl.add_argument("--json", action="store_true")
    sr = ssub.add_parser("remove", help="remove a silence by id", parents=[KAFKA, STORE])
    sr.add_argument("id")
    si.set_defaults(func=cmd_silence)


def _notify_config(cfg: Config):
    from telltale.sinks.delivery import NotifyConfig

    path = cfg.notify_config
    if not path:
        raise SystemExit("telltale notify needs a handler configuration: --config FILE or "
                         "TELLTALE_NOTIFY_CONFIG (YAML or JSON; see README 'Delivering alerts')")
    return NotifyConfig.load(path)


def cmd_notify(args) -> int:
    from telltale.sinks.notify import run_notify

    cfg = from_args(args)
    if not cfg.kafka:
        print("telltale notify consumes the alert topic: set TELLTALE_KAFKA or pass --kafka. "
              "Embedded runs deliver in-process when TELLTALE_NOTIFY_CONFIG is set.",
              file=sys.stderr)
        return 2
    try:
        ncfg = _notify_config(cfg)
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
    from telltale.sinks.silences import FileSilences

    return FileSilences(os.path.join(cfg.store_dir, "silences.json"))


def cmd_silence(args) -> int:
    cfg = from_args(args)
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
    from telltale.sinks.silences import new_silence

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
