"""``telltale doctor``: check a Kafka-mode deployment and say in plain words what is wrong.

Checks, in order: the broker (reachable, credentials accepted), Telltale's topics and their
partition counts, the worker group's consumer lag, messages on the dead-letter topic,
InfluxDB (health, credentials, database, retention policy) and, given a data dir, the
worker's status file. Each check is ``ok``, ``warn`` (worth a look) or ``fail``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

from telltale.access import AccessError, kafka_admin
from telltale.config import Config, ConfigError
from telltale.redact import redact_secrets
from telltale.sinks.influx import influx_query, ping

STATUS_STALE_S = 10.0  # the worker rewrites its status file every 0.5 s


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    facts: dict = field(default_factory=dict)


def _secrets(cfg: Config) -> list[str]:
    out = [cfg.influx_token, cfg.kafka_sasl_password or ""]
    if ":" in cfg.influx_token:
        out.append(cfg.influx_token.split(":", 1)[1])
    try:
        out.append(cfg.kafka_options().get("sasl_plain_password", ""))
    except ConfigError:
        pass
    return [s for s in out if s]


def redact(text: str, cfg: Config) -> str:
    """``text`` with every configured secret replaced by ``***`` where it stands as a whole
    token (a last line of defence; a short password inside a word is left alone)."""
    return redact_secrets(text, _secrets(cfg))


def check_kafka(cfg: Config, max_lag: int) -> list[Check]:
    if not cfg.kafka:
        return [Check("kafka", "fail", "no broker configured: set TELLTALE_KAFKA or pass --kafka")]
    try:
        admin = kafka_admin(cfg, timeout=10.0)
    except (AccessError, ConfigError) as exc:
        return [Check("kafka", "fail", str(exc))]
    who = (f"as {cfg.kafka_sasl_username!r} " if cfg.kafka_sasl_username else "")
    checks = [Check("kafka", "ok", f"broker {cfg.kafka} reachable, connected {who}"
                    f"({cfg.kafka_security_protocol})")]
    try:
        checks += _topics_lag_deadletter(cfg, admin, max_lag)
    except Exception as exc:  # an ACL or broker error mid-way: say which, keep the report
        checks.append(Check("kafka-metadata", "fail", f"could not read topics or offsets: "
                            f"{type(exc).__name__}: {exc}"))
    finally:
        admin.close()
    return checks


def _topics_lag_deadletter(cfg: Config, admin, max_lag: int) -> list[Check]:
    from kafka import TopicPartition
    from kafka.admin import OffsetSpec

    checks = []
    existing = set(admin.list_topics())
    wanted = [cfg.metrics_topic, cfg.alerts_topic, cfg.deadletter_topic]
    parts: dict[str, list[int]] = {}
    for t in admin.describe_topics([t for t in wanted if t in existing]):
        if t.get("error_code", 0) == 0:
            parts[t["name"]] = sorted(p["partition_index"] for p in t["partitions"])
    missing = [t for t in wanted if t not in parts]
    counts = {t: len(p) for t, p in parts.items()}
    if missing:
        checks.append(Check("topics", "fail", f"missing topic(s) {', '.join(missing)}: start "
                            "'telltale worker' once (it creates them) or create them with "
                            f"{cfg.partitions} partitions", {"partitions": counts}))
    else:
        odd = {t: n for t, n in counts.items() if n != cfg.partitions}
        detail = ", ".join(f"{t} ({n} partitions)" for t, n in counts.items())
        if odd:
            detail += f"; expected {cfg.partitions} partitions (TELLTALE_PARTITIONS)"
        checks.append(Check("topics", "warn" if odd else "ok", detail, {"partitions": counts}))

    def offsets(topic: str, spec) -> dict[int, int]:
        tps = {TopicPartition(topic, p): spec for p in parts.get(topic, [])}
        return {tp.partition: o.offset for tp, o in admin.list_partition_offsets(tps).items()} \
            if tps else {}

    if cfg.metrics_topic in parts:
        end = offsets(cfg.metrics_topic, OffsetSpec.LATEST)
        committed = admin.list_group_offsets({cfg.app_id: None}).get(cfg.app_id, {})
        done = {tp.partition: om.offset for tp, om in committed.items()
                if tp.topic == cfg.metrics_topic and om.offset >= 0}
        lag = {p: max(0, e - done.get(p, 0)) for p, e in end.items()}
        total = sum(lag.values())
        facts = {"group": cfg.app_id, "lag": total, "per_partition": lag,
                 "messages": sum(end.values())}
        if not done and total:
            checks.append(Check("lag", "fail", f"{total} messages on {cfg.metrics_topic} and no "
                                f"offsets committed by worker group {cfg.app_id!r}: is "
                                "'telltale worker' running (with this TELLTALE_APP_ID)?", facts))
        elif total > max_lag:
            checks.append(Check("lag", "fail", f"worker group {cfg.app_id!r} is {total} messages "
                                f"behind (over {max_lag}): the worker is down, stuck or too "
                                "slow; see its log and 'telltale doctor --data-dir'", facts))
        else:
            checks.append(Check("lag", "ok", f"worker group {cfg.app_id!r} is {total} messages "
                                "behind", facts))
    if cfg.deadletter_topic in parts:
        end = offsets(cfg.deadletter_topic, OffsetSpec.LATEST)
        start = offsets(cfg.deadletter_topic, OffsetSpec.EARLIEST)
        n = sum(end[p] - start.get(p, 0) for p in end)
        checks.append(Check("deadletter", "warn" if n else "ok",
                            f"{n} message(s) on {cfg.deadletter_topic}"
                            + ("; see why with 'telltale alerts --deadletter --from-beginning'"
                               if n else ""), {"messages": n}))
    return checks


def check_influx(cfg: Config) -> list[Check]:
    if not cfg.influx_url:
        return [Check("influxdb", "warn", "no InfluxDB configured (TELLTALE_INFLUX_URL): the "
                      "worker keeps no points")]
    try:
        version = ping(cfg, timeout=5)
    except OSError as exc:
        return [Check("influxdb", "fail", f"InfluxDB at {cfg.influx_url} is not reachable "
                      f"({type(exc).__name__}): check TELLTALE_INFLUX_URL or start it")]
    try:
        res = influx_query(cfg, "SHOW DATABASES")
    except AccessError as exc:
        return [Check("influxdb", "fail", str(exc), {"version": version})]
    dbs = [v[0] for s in res[0].get("series", []) for v in s.get("values", [])] if res else []
    checks = [Check("influxdb", "ok", f"InfluxDB at {cfg.influx_url} healthy"
                    + (" (authenticated)" if cfg.influx_token else ""), {"version": version})]
    if cfg.influx_db not in dbs:
        checks.append(Check("database", "fail", f"database {cfg.influx_db!r} does not exist: "
                            "the worker creates it at start (check TELLTALE_INFLUX_DB)",
                            {"databases": dbs}))
        return checks
    try:
        res = influx_query(cfg, f'SHOW RETENTION POLICIES ON "{cfg.influx_db}"')
    except AccessError as exc:  # e.g. the worker's write-only user
        checks.append(Check("retention", "warn", f"cannot read the retention policies of "
                            f"{cfg.influx_db!r} as this user ({exc}); run doctor with a user "
                            "that may read it"))
        return checks
    rows = [dict(zip(s["columns"], v, strict=False)) for s in res[0].get("series", [])
            for v in s.get("values", [])] if res else []
    default = next((r for r in rows if r.get("default")), None)
    if default is None:
        checks.append(Check("retention", "fail", f"database {cfg.influx_db!r} has no default "
                            "retention policy: writes to it fail"))
    else:
        d = default.get("duration", "?")
        keep = "keeps data forever" if d in ("0s", "0") else f"keeps data for {d}"
        checks.append(Check("retention", "ok", f"database {cfg.influx_db!r}, default retention "
                            f"policy {default['name']!r} {keep}", {"policies": rows}))
    return checks


def check_worker(data_dir: str) -> Check:
    path = os.path.join(data_dir, "worker-status.json")
    try:
        with open(path) as f:
            doc = json.load(f)
        age = time.time() - os.path.getmtime(path)
    except (OSError, ValueError):
        return Check("worker", "fail", f"no worker status in {path}: no worker has run with "
                     "this --data-dir (TELLTALE_DATA_DIR)")
    influx = doc.get("influx", {})
    facts = {"age_s": round(age, 1), "assigned": doc.get("assigned"), "pid": doc.get("pid"),
             "runs": len(doc.get("runs", {})), "influx": influx}
    if age > STATUS_STALE_S:
        return Check("worker", "fail", f"worker status is {age:.0f} s old: the worker (pid "
                     f"{doc.get('pid')}) is not running", facts)
    if influx.get("alarm"):  # the spill is filling up (or full: input waits)
        return Check("worker", "fail" if influx.get("backpressure") else "warn",
                     f"worker running (partitions {doc.get('assigned')}), but InfluxDB "
                     f"writes are behind: {influx['alarm']}", facts)
    if influx.get("spill_files") or influx.get("last_error"):
        return Check("worker", "warn", f"worker running (partitions {doc.get('assigned')}), "
                     f"but InfluxDB writes are behind: {influx.get('pending', 0)} pending, "
                     f"{influx.get('spill_files', 0)} spill file(s)", facts)
    return Check("worker", "ok", f"worker running (pid {doc.get('pid')}, partitions "
                 f"{doc.get('assigned')}, {facts['runs']} runs seen)", facts)


def diagnose(cfg: Config, data_dir: str | None = None, max_lag: int = 10_000) -> list[Check]:
    """All checks, in order."""
    checks = check_kafka(cfg, max_lag) + check_influx(cfg)
    if data_dir:
        checks.append(check_worker(data_dir))
    for c in checks:
        c.detail = redact(c.detail, cfg)
        c.facts = _redact_facts(c.facts, cfg)
    return checks


def _redact_facts(value, cfg: Config):
    if isinstance(value, str):
        return redact(value, cfg)
    if isinstance(value, dict):
        return {k: _redact_facts(v, cfg) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_facts(v, cfg) for v in value]
    return value


def render(checks: list[Check], as_json: bool, cfg: Config) -> str:
    healthy = not any(c.status == "fail" for c in checks)
    if as_json:
        text = json.dumps({"healthy": healthy, "checks": [asdict(c) for c in checks]})
    else:
        lines = [f"{c.status.upper():4}  {c.name:11} {c.detail}" for c in checks]
        bad = [c for c in checks if c.status == "fail"]
        lines.append("healthy" if healthy else
                     f"NOT healthy: {len(bad)} problem(s): {', '.join(c.name for c in bad)}")
        text = "\n".join(lines)
    return text  # details and facts were redacted by diagnose()
