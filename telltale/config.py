"""Configuration from environment variables (``TELLTALE_*``), overridable by CLI flags.

No ``TELLTALE_KAFKA`` means the embedded default: one process, in-memory bus, local store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

DEFAULT_WINDOWS = ("step:100", "step:100/50", "time:60s")


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(x.strip() for x in raw.split(",") if x.strip())


@dataclass(frozen=True)
class Config:
    kafka: str | None = None  # bootstrap servers; None = embedded
    topic_prefix: str = "telltale"
    partitions: int = 4
    app_id: str = "telltale-worker"
    influx_url: str | None = None  # None = local store
    influx_token: str = ""  # "user:password" for InfluxDB 1.8; empty when auth is off
    influx_org: str = "-"
    influx_db: str = "telltale"
    store_dir: str = "telltale-data"
    data_dir: str = ".telltale-worker"
    windows: tuple[str, ...] = DEFAULT_WINDOWS
    pipelines_file: str | None = None
    alert_policy_file: str | None = None  # JSON AlertPolicy (streams/lifecycle.py)
    notify_config: str | None = None  # YAML/JSON handlers + routes (sinks/handlers.py)
    web_port: int = 6066
    log_level: str = "warning"

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
            influx_token=g("TELLTALE_INFLUX_TOKEN", ""),
            influx_org=g("TELLTALE_INFLUX_ORG", cls.influx_org),
            influx_db=g("TELLTALE_INFLUX_DB", cls.influx_db),
            store_dir=g("TELLTALE_STORE_DIR", cls.store_dir),
            data_dir=g("TELLTALE_DATA_DIR", cls.data_dir),
            windows=_env_list("TELLTALE_WINDOWS", DEFAULT_WINDOWS),
            pipelines_file=g("TELLTALE_PIPELINES") or None,
            alert_policy_file=g("TELLTALE_ALERT_POLICY") or None,
            notify_config=g("TELLTALE_NOTIFY_CONFIG") or None,
            web_port=int(g("TELLTALE_WEB_PORT", cls.web_port)),
            log_level=g("TELLTALE_LOG_LEVEL", cls.log_level),
        )
        names = {f.name for f in fields(cls)}
        return replace(cfg, **{k: v for k, v in overrides.items() if k in names and v is not None})
