"""The real Kafka and InfluxDB started by scripts/services.sh, and configs that use them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from telltale.config import Config
from tests.support import ROOT, unique

SERVICES_SH = ROOT / "scripts" / "services.sh"


def services_sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``scripts/services.sh ARGS`` (e.g. ``stop kafka``); CalledProcessError on failure."""
    return subprocess.run(["bash", str(SERVICES_SH), *args], check=True, capture_output=True,
                          text=True, timeout=timeout)


def start_services() -> dict:
    """Start (or reuse) the services; their ``TELLTALE_*`` variables. RuntimeError with
    services.sh's output when they cannot start."""
    proc = subprocess.run(["bash", str(SERVICES_SH), "start"], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("could not start Kafka/InfluxDB with scripts/services.sh:\n"
                           + proc.stderr[-4000:])
    env = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    return env


def isolated_config(services: dict, data_dir: Path, prefix: str = "t", **kw) -> Config:
    """A config with its own topics, consumer group and InfluxDB database (4 partitions
    unless ``kw`` says otherwise)."""
    name = unique(prefix)
    kw.setdefault("partitions", 4)
    return Config(kafka=services["TELLTALE_KAFKA"], influx_url=services["TELLTALE_INFLUX_URL"],
                  topic_prefix=name, app_id=f"{name}-worker", influx_db=name.replace("-", "_"),
                  data_dir=str(data_dir), **kw)


def config_env(cfg: Config) -> dict:
    """This process's environment with ``cfg`` in ``TELLTALE_*`` variables (for a
    ``telltale`` subprocess)."""
    env = dict(os.environ)
    env.update({
        "TELLTALE_KAFKA": cfg.kafka, "TELLTALE_INFLUX_URL": cfg.influx_url or "",
        "TELLTALE_TOPIC_PREFIX": cfg.topic_prefix, "TELLTALE_APP_ID": cfg.app_id,
        "TELLTALE_INFLUX_DB": cfg.influx_db, "TELLTALE_PARTITIONS": str(cfg.partitions),
        "TELLTALE_LOG_LEVEL": "warning",
        "TELLTALE_MAX_ACTIVE_RUNS": str(cfg.max_active_runs),
        "TELLTALE_MAX_SERIES_PER_RUN": str(cfg.max_series_per_run),
        "TELLTALE_RUN_IDLE_TTL": str(cfg.run_idle_ttl),
    })
    return env
