"""Every setting, declared once: its environment variable (``TELLTALE_*``), default, check
and, for some, a CLI flag. :meth:`Config.from_env` is the one place the environment is read;
the CLI makes its flags from the same declaration (:func:`add_flag`, :func:`from_args`).

No ``TELLTALE_KAFKA`` means the embedded default: one process, in-memory bus, local store.
An empty variable counts as unset, except for lists (``TELLTALE_ALLOWED_TAGS=`` allows none).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace

DEFAULT_WINDOWS = ("step:100", "step:100/50", "time:60s")
DEFAULT_ALLOWED_TAGS = ("rank", "host", "node", "model")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# which detector scores go to the ``scores`` measurement (streams/processor.py): every
# value's; only values a detector finds abnormal (or alerts on) plus every 10th value of
# each series as a trace; none (raw values, window statistics and alerts are always written)
SCORES_MODES = ("all", "notable", "none")
LOG_LEVELS = ("debug", "info", "warn", "warning", "error", "critical")


class ConfigError(ValueError):
    """A setting is missing or inconsistent; the message says which and how to fix it."""


# -- how a raw string becomes a value, and what a value must be -------------------------


def _words(raw: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in raw.split(",") if x.strip())


def _switch(raw: str) -> bool:
    return raw not in ("", "0")


def _regex(raw: str) -> str:
    try:
        re.compile(raw)
    except re.error as exc:
        raise ValueError(f"is not a regular expression ({exc})") from None
    return raw


def _at_least(low: float) -> Callable:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be more than 0"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be a port, 0..65535"


def _one_of(choices: tuple[str, ...]) -> Callable:
    return lambda v: None if v is None or v in choices else f"is not one of {', '.join(choices)}"


def _home(*parts: str) -> Callable[[], str]:
    return lambda: os.path.join(os.path.expanduser("~"), *parts)


def setting(default=None, env: str = "", help: str = "", *, parse: Callable = str,
            flag: str | None = None, check: Callable | None = None, factory=None,
            secret: bool = False, file_env: str | None = None, empty: bool = False) -> Field:
    """A :class:`Config` field: ``env`` is read through ``parse`` (raises ValueError), then
    ``check`` (returns a reason or None); ``file_env`` names a file holding the value;
    ``empty``: an empty variable is a value (lists), not unset."""
    meta = {"env": env, "help": help, "parse": parse, "flag": flag, "check": check,
            "file_env": file_env, "empty": empty}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


def _read_secret(path: str | None, var: str) -> str:
    """The stripped contents of a secret file named by env ``var`` ('' when unset)."""
    if not path:
        return ""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {var}={path}: {exc.strerror}") from None


def _parse(f: Field, raw: str, where: str):
    """``raw`` through the field's parser; a ConfigError names ``where`` it was set."""
    parse = f.metadata["parse"]
    try:
        return parse(raw)
    except ValueError as exc:
        reason = {int: "is not a whole number", float: "is not a number"}.get(parse, str(exc))
        raise ConfigError(f"{where}={raw!r} {reason}") from None


# -- the settings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Telltale's settings; ``Config()`` is the defaults, :meth:`from_env` the deployment's."""

    kafka: str | None = setting(None, "TELLTALE_KAFKA", "bootstrap servers", flag="--kafka")
    topic_prefix: str = setting(
        "telltale", "TELLTALE_TOPIC_PREFIX", "topic name prefix: PREFIX.metrics, "
        "PREFIX.alerts, PREFIX.deadletter", flag="--topic-prefix")
    partitions: int = setting(4, "TELLTALE_PARTITIONS", "partitions of new topics", parse=int,
                              check=_at_least(1), flag="--partitions")
    app_id: str = setting("telltale-worker", "TELLTALE_APP_ID",
                          "the worker's Faust app id = consumer group", flag="--app-id")
    influx_url: str | None = setting(None, "TELLTALE_INFLUX_URL", "InfluxDB URL; token from "
                                     "TELLTALE_INFLUX_TOKEN", flag="--influx-url")
    # "user:password" for InfluxDB 1.8; empty when auth is off; never in repr
    influx_token: str = setting("", "TELLTALE_INFLUX_TOKEN", secret=True,
                                file_env="TELLTALE_INFLUX_TOKEN_FILE")
    influx_org: str = setting("-", "TELLTALE_INFLUX_ORG")
    influx_db: str = setting("telltale", "TELLTALE_INFLUX_DB", "InfluxDB database",
                             flag="--influx-db")
    store_dir: str = setting("telltale-data", "TELLTALE_STORE_DIR", "embedded mode's store",
                             flag="--store-dir")
    data_dir: str = setting(".telltale-worker", "TELLTALE_DATA_DIR", "worker's local data dir",
                            flag="--data-dir")
    windows: tuple[str, ...] = setting(
        DEFAULT_WINDOWS, "TELLTALE_WINDOWS", "window specs, e.g. step:100,step:100/50,time:60s",
        parse=_words, flag="--windows")
    pipelines_file: str | None = setting(None, "TELLTALE_PIPELINES")  # JSON detector pipelines
    alert_policy_file: str | None = setting(None, "TELLTALE_ALERT_POLICY")  # JSON AlertPolicy
    notify_config: str | None = setting(None, "TELLTALE_NOTIFY_CONFIG",
                                        "handlers and routes, YAML or JSON")
    web_port: int = setting(6066, "TELLTALE_WEB_PORT", "the worker's web server port",
                            parse=int, check=_port, flag="--web-port")
    # Faust's own /router/ and /table/ views on the worker's web server
    faust_web_views: bool = setting(False, "TELLTALE_FAUST_WEB_VIEWS", parse=_switch)
    worker_ui: bool = setting(False, "TELLTALE_WORKER_UI", parse=_switch)  # the worker's /ui/
    max_series_per_run: int = setting(2000, "TELLTALE_MAX_SERIES_PER_RUN", parse=int,
                                      check=_at_least(1))  # metric × rank series of one run
    max_active_runs: int = setting(50_000, "TELLTALE_MAX_ACTIVE_RUNS", parse=int,
                                   check=_at_least(1))  # runs with state one worker holds
    run_idle_ttl: float = setting(86_400.0, "TELLTALE_RUN_IDLE_TTL", parse=float,
                                  check=_positive)  # s without events: the run is ended
    spill_max_bytes: int = setting(1 << 30, "TELLTALE_SPILL_MAX_BYTES", parse=int,
                                   check=_at_least(0))  # InfluxDB-down spill; past it input waits
    session_timeout: float = setting(8.0, "TELLTALE_SESSION_TIMEOUT", parse=float,
                                     check=_positive)  # s: a silent worker loses its partitions
    log_level: str = setting("warning", "TELLTALE_LOG_LEVEL", "debug|info|warning|error",
                             check=lambda v: _one_of(LOG_LEVELS)(v.lower()), flag="--log-level")
    # Kafka security, passed through to kafka-python (see kafka_options()); secrets not in repr
    kafka_security_protocol: str = setting("PLAINTEXT", "TELLTALE_KAFKA_SECURITY_PROTOCOL",
                                           parse=str.upper)
    kafka_sasl_mechanism: str | None = setting(None, "TELLTALE_KAFKA_SASL_MECHANISM",
                                               parse=str.upper)
    kafka_sasl_username: str | None = setting(None, "TELLTALE_KAFKA_SASL_USERNAME")
    kafka_sasl_password: str | None = setting(None, "TELLTALE_KAFKA_SASL_PASSWORD", secret=True)
    kafka_sasl_password_file: str | None = setting(None, "TELLTALE_KAFKA_SASL_PASSWORD_FILE")
    kafka_ssl_cafile: str | None = setting(None, "TELLTALE_KAFKA_SSL_CAFILE")
    kafka_ssl_certfile: str | None = setting(None, "TELLTALE_KAFKA_SSL_CERTFILE")
    kafka_ssl_keyfile: str | None = setting(None, "TELLTALE_KAFKA_SSL_KEYFILE")
    # the producer: run id, spool, system sampling and privacy (tags allowed, the salt for
    # hash_tags, made on first use, and an optional metric-name policy: globs and/or a regex)
    run: str | None = setting(None, "TELLTALE_RUN")
    spool_dir: str = setting(env="TELLTALE_SPOOL_DIR", help="spool directory",
                             factory=_home(".cache", "telltale", "spool"))
    system_interval: float = setting(0.0, "TELLTALE_SYSTEM_INTERVAL", parse=float,
                                     check=_at_least(0))  # s between system samples; 0 = off
    allowed_tags: tuple[str, ...] = setting(DEFAULT_ALLOWED_TAGS, "TELLTALE_ALLOWED_TAGS",
                                            parse=_words, empty=True)
    hash_salt_file: str = setting(env="TELLTALE_HASH_SALT_FILE",
                                  factory=_home(".config", "telltale", "hash-salt"))
    metric_names: tuple[str, ...] | None = setting(None, "TELLTALE_METRIC_NAMES", parse=_words,
                                                   empty=True)
    metric_pattern: str | None = setting(None, "TELLTALE_METRIC_PATTERN", parse=_regex)
    scores: str = setting("notable", "TELLTALE_SCORES", parse=lambda r: r.strip().lower())

    def __post_init__(self):
        if self.scores not in SCORES_MODES:
            raise ConfigError(f"TELLTALE_SCORES={self.scores!r} is not one of "
                              f"{', '.join(SCORES_MODES)}: 'all' writes every value's detector "
                              "scores, 'notable' (the default) only abnormal values' plus a "
                              "trace, 'none' no scores")
        for f in fields(self):
            check = f.metadata["check"]
            value = getattr(self, f.name)
            reason = check(value) if check is not None else None
            if reason:
                flag = f.metadata["flag"]
                raise ConfigError(f"{f.metadata['env']}={value!r} {reason}"
                                  + (f" (set by the variable or {flag})" if flag else ""))

    @property
    def metrics_topic(self) -> str:
        return f"{self.topic_prefix}.metrics"

    @property
    def alerts_topic(self) -> str:
        return f"{self.topic_prefix}.alerts"

    @property
    def deadletter_topic(self) -> str:
        return f"{self.topic_prefix}.deadletter"

    @property
    def influx_bucket(self) -> str:
        return f"{self.influx_db}/autogen"

    @classmethod
    def from_env(cls, env=None, **overrides) -> Config:
        """The settings from ``env`` (default ``os.environ``), then ``overrides`` that are
        not None; a :class:`ConfigError` names the variable that is wrong."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            m = f.metadata
            raw = env.get(m["env"])
            if raw is None or (raw == "" and not m["empty"]):
                if m["file_env"] and env.get(m["file_env"]):
                    values[f.name] = _read_secret(env[m["file_env"]], m["file_env"])
                continue
            values[f.name] = _parse(f, raw, m["env"])
        names = {f.name for f in fields(cls)}
        cfg = cls(**values)
        return replace(cfg, **{k: v for k, v in overrides.items() if k in names and v is not None})

    def kafka_options(self) -> dict:
        """kafka-python keyword arguments for the security settings (producer, consumer, admin).

        Reads the SASL password file here, so the secret is only held where it is used.
        Raises :class:`ConfigError` for an inconsistent combination.
        """
        proto = self.kafka_security_protocol.upper()
        if proto not in SECURITY_PROTOCOLS:
            raise ConfigError(f"TELLTALE_KAFKA_SECURITY_PROTOCOL={proto!r} is not one of "
                              f"{', '.join(SECURITY_PROTOCOLS)}")
        opts: dict = {"security_protocol": proto}
        if proto.startswith("SASL"):
            mech = (self.kafka_sasl_mechanism or "").upper()
            if mech not in SASL_MECHANISMS:
                raise ConfigError(f"security protocol {proto} needs TELLTALE_KAFKA_SASL_MECHANISM "
                                  f"set to one of {', '.join(SASL_MECHANISMS)} (got {mech!r})")
            password = self.kafka_sasl_password or _read_secret(
                self.kafka_sasl_password_file, "TELLTALE_KAFKA_SASL_PASSWORD_FILE")
            if not self.kafka_sasl_username or not password:
                raise ConfigError(f"SASL mechanism {mech} needs TELLTALE_KAFKA_SASL_USERNAME and "
                                  "TELLTALE_KAFKA_SASL_PASSWORD (or _PASSWORD_FILE)")
            opts.update(sasl_mechanism=mech, sasl_plain_username=self.kafka_sasl_username,
                        sasl_plain_password=password)
        elif self.kafka_sasl_mechanism:
            raise ConfigError(f"TELLTALE_KAFKA_SASL_MECHANISM is set but the security protocol is "
                              f"{proto}; set TELLTALE_KAFKA_SECURITY_PROTOCOL=SASL_SSL or "
                              "SASL_PLAINTEXT")
        if proto.endswith("SSL"):
            for key in ("cafile", "certfile", "keyfile"):
                path = getattr(self, f"kafka_ssl_{key}")
                if path:
                    if not os.path.isfile(path):
                        raise ConfigError(f"TELLTALE_KAFKA_SSL_{key.upper()}={path} does not "
                                          "exist")
                    opts[f"ssl_{key}"] = path
        return opts


# -- CLI flags from the declaration -------------------------------------------------------


_FIELDS = {f.name: f for f in fields(Config)}


class _Flag(argparse.Action):
    """Stores a setting's flag as given (parsed later, by :func:`from_args`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        given = getattr(namespace, "settings_given", None)
        if given is None:
            given = {}
            namespace.settings_given = given
        given[self.dest] = option_string


def add_flag(parser: argparse.ArgumentParser, name: str, help: str | None = None,
             flag: str | None = None) -> None:
    """A flag for setting ``name``: its declared flag and help, the variable and default
    appended (``help`` / ``flag`` replace the declared ones)."""
    f = _FIELDS[name]
    m = f.metadata
    default = f.default if f.default is not MISSING else f.default_factory()
    if isinstance(default, tuple):
        default = ",".join(default)
    where = f"env {m['env']}" + (f", default {default}" if default not in (None, "")
                                 and help is None else "")
    parser.add_argument(flag or m["flag"], dest=name, action=_Flag,
                        help=f"{help or m['help']} ({where})")


def add_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """:func:`add_flag` for each of ``names``."""
    for name in names:
        add_flag(parser, name)


def from_args(args: argparse.Namespace, env=None) -> Config:
    """The settings from the environment, then the flags given on the command line (a
    :class:`ConfigError` names the flag when its value is wrong)."""
    over = {name: _parse(_FIELDS[name], getattr(args, name), flag)
            for name, flag in (getattr(args, "settings_given", None) or {}).items()}
    return Config.from_env(env, **over)
