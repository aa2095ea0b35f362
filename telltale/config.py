"""Configuration from environment variables (``TELLTALE_*``), overridable by CLI flags.

No ``TELLTALE_KAFKA`` means the embedded default: one process, in-memory bus, local store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

DEFAULT_WINDOWS = ("step:100", "step:100/50", "time:60s")
DEFAULT_ALLOWED_TAGS = ("rank", "host", "node", "model")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# which detector scores go to the ``scores`` measurement (streams/processor.py): every
# value's; only values a detector finds abnormal (or alerts on) plus every 10th value of
# each series as a trace; none (raw values, window statistics and alerts are always written)
SCORES_MODES = ("all", "notable", "none")


class ConfigError(ValueError):
    """A setting is missing or inconsistent; the message says which and how to fix it."""


def _env_list(name: str, default: tuple[str, ...] | None, env=None) -> tuple[str, ...] | None:
    raw = (os.environ if env is None else env).get(name)
    if raw is None:
        return default
    return tuple(x.strip() for x in raw.split(",") if x.strip())


def _read_secret(path: str | None, var: str) -> str:
    """The stripped contents of a secret file named by env ``var`` ('' when unset)."""
    if not path:
        return ""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {var}={path}: {exc.strerror}") from None


@dataclass(frozen=True)
class Config:
    kafka: str | None = None  # bootstrap servers; None = embedded
    topic_prefix: str = "telltale"
    partitions: int = 4
    app_id: str = "telltale-worker"
    influx_url: str | None = None  # None = local store
    # "user:password" for InfluxDB 1.8; empty when auth is off; never in repr
    influx_token: str = field(default="", repr=False)
    influx_org: str = "-"
    influx_db: str = "telltale"
    store_dir: str = "telltale-data"
    data_dir: str = ".telltale-worker"
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    pipelines_file: str | None = None
    alert_policy_file: str | None = None  # JSON AlertPolicy (streams/lifecycle.py)
    notify_config: str | None = None  # YAML/JSON handlers + routes (sinks/handlers.py)
    web_port: int = 6066
    faust_web_views: bool = False  # Faust's own /router/ and /table/ views on the web server
    max_series_per_run: int = 2000  # metric × rank series one run may have
    max_active_runs: int = 50_000  # runs with state one worker holds (un-ended)
    run_idle_ttl: float = 86_400.0  # a run without events this long (s) is ended
    spill_max_bytes: int = 1 << 30  # InfluxDB-down spill on disk; past it input waits
    session_timeout: float = 8.0  # s: a worker silent this long (kill -9) loses its partitions
    log_level: str = "warning"
    # Kafka security, passed through to kafka-python (see kafka_options()); secrets not in repr
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_sasl_password_file: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    spool_dir: str = field(default_factory=lambda: os.path.join(
        os.path.expanduser("~"), ".cache", "telltale", "spool"))
    allowed_tags: tuple[str, ...] = DEFAULT_ALLOWED_TAGS
    # producer privacy: the salt for hash_tags (a random one is made there on first use),
    # and an optional metric-name policy (names allowed, as globs, and/or a regex)
    hash_salt_file: str = field(default_factory=lambda: os.path.join(
        os.path.expanduser("~"), ".config", "telltale", "hash-salt"))
    metric_names: tuple[str, ...] | None = None
    metric_pattern: str | None = None
    scores: str = "notable"  # one of SCORES_MODES

    def __post_init__(self):
        if self.scores not in SCORES_MODES:
            raise ConfigError(f"TELLTALE_SCORES={self.scores!r} is not one of "
                              f"{', '.join(SCORES_MODES)}: 'all' writes every value's detector "
                              "scores, 'notable' (the default) only abnormal values' plus a "
                              "trace, 'none' no scores")

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
        env = os.environ if env is None else env
        g = env.get
        cfg = cls(
            kafka=g("TELLTALE_KAFKA") or None,
            topic_prefix=g("TELLTALE_TOPIC_PREFIX", cls.topic_prefix),
            partitions=int(g("TELLTALE_PARTITIONS", cls.partitions)),
            app_id=g("TELLTALE_APP_ID", cls.app_id),
            influx_url=g("TELLTALE_INFLUX_URL") or None,
            influx_token=g("TELLTALE_INFLUX_TOKEN") or _read_secret(
                g("TELLTALE_INFLUX_TOKEN_FILE"), "TELLTALE_INFLUX_TOKEN_FILE"),
            influx_org=g("TELLTALE_INFLUX_ORG", cls.influx_org),
            influx_db=g("TELLTALE_INFLUX_DB", cls.influx_db),
            store_dir=g("TELLTALE_STORE_DIR", cls.store_dir),
            data_dir=g("TELLTALE_DATA_DIR", cls.data_dir),
            windows=_env_list("TELLTALE_WINDOWS", DEFAULT_WINDOWS, env),
            pipelines_file=g("TELLTALE_PIPELINES") or None,
            alert_policy_file=g("TELLTALE_ALERT_POLICY") or None,
            notify_config=g("TELLTALE_NOTIFY_CONFIG") or None,
            web_port=int(g("TELLTALE_WEB_PORT", cls.web_port)),
            faust_web_views=g("TELLTALE_FAUST_WEB_VIEWS", "") not in ("", "0"),
            max_series_per_run=int(g("TELLTALE_MAX_SERIES_PER_RUN", cls.max_series_per_run)),
            max_active_runs=int(g("TELLTALE_MAX_ACTIVE_RUNS", cls.max_active_runs)),
            run_idle_ttl=float(g("TELLTALE_RUN_IDLE_TTL", cls.run_idle_ttl)),
            spill_max_bytes=int(g("TELLTALE_SPILL_MAX_BYTES", cls.spill_max_bytes)),
            session_timeout=float(g("TELLTALE_SESSION_TIMEOUT", cls.session_timeout)),
            log_level=g("TELLTALE_LOG_LEVEL", cls.log_level),
            kafka_security_protocol=(g("TELLTALE_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            kafka_sasl_mechanism=(g("TELLTALE_KAFKA_SASL_MECHANISM") or "").upper() or None,
            kafka_sasl_username=g("TELLTALE_KAFKA_SASL_USERNAME") or None,
            kafka_sasl_password=g("TELLTALE_KAFKA_SASL_PASSWORD") or None,
            kafka_sasl_password_file=g("TELLTALE_KAFKA_SASL_PASSWORD_FILE") or None,
            kafka_ssl_cafile=g("TELLTALE_KAFKA_SSL_CAFILE") or None,
            kafka_ssl_certfile=g("TELLTALE_KAFKA_SSL_CERTFILE") or None,
            kafka_ssl_keyfile=g("TELLTALE_KAFKA_SSL_KEYFILE") or None,
            spool_dir=g("TELLTALE_SPOOL_DIR") or cls.__dataclass_fields__["spool_dir"]
            .default_factory(),
            allowed_tags=_env_list("TELLTALE_ALLOWED_TAGS", DEFAULT_ALLOWED_TAGS, env),
            hash_salt_file=g("TELLTALE_HASH_SALT_FILE") or cls.__dataclass_fields__[
                "hash_salt_file"].default_factory(),
            metric_names=_env_list("TELLTALE_METRIC_NAMES", None, env),
            metric_pattern=g("TELLTALE_METRIC_PATTERN") or None,
            scores=(g("TELLTALE_SCORES") or cls.scores).strip().lower(),
        )
        names = {f.name for f in fields(cls)}
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
