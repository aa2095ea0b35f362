"""Fixtures: the real Kafka and InfluxDB (started by scripts/services.sh) and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from telltale.config import Config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def services() -> dict:
    """Start (or reuse) the real services; fail loudly when they cannot start."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start"],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail("could not start Kafka/InfluxDB with scripts/services.sh:\n"
                    + proc.stderr[-4000:], pytrace=False)
    env = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            k, v = line[len("export "):].split("=", 1)
            env[k] = v
    return env


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def kafka_config(services, tmp_path) -> Config:
    """A config with its own topics, consumer group and InfluxDB database."""
    name = unique("t")
    return Config(kafka=services["TELLTALE_KAFKA"], influx_url=services["TELLTALE_INFLUX_URL"],
                  topic_prefix=name, app_id=f"{name}-worker", influx_db=name.replace("-", "_"),
                  data_dir=str(tmp_path / "worker"), partitions=4)


def config_env(cfg: Config) -> dict:
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


class WorkerProcess:
    """A `telltale worker` subprocess with its own data dir and log file."""

    def __init__(self, cfg: Config, data_dir: Path):
        self.cfg, self.data_dir = cfg, data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "worker.log"
        env = config_env(cfg)
        env["TELLTALE_DATA_DIR"] = str(data_dir)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telltale", "worker"], cwd=data_dir, env=env,
            stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready = the agent is running and holds some partitions of the metrics topic."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if self.status().get("assigned"):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.log()[-3000:]}")

    def status(self) -> dict:
        p = self.data_dir / "worker-status.json"
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return {}

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_worker(tmp_path):
    workers: list[WorkerProcess] = []

    def start(cfg: Config, name: str = "w0") -> WorkerProcess:
        w = WorkerProcess(cfg, tmp_path / name)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


def influxql(cfg: Config, q: str) -> list[dict]:
    """Run an InfluxQL query; return the series list of the first statement."""
    from telltale.sinks.influx import QueryFailed, first_series

    try:
        return first_series(cfg, q)
    except QueryFailed as exc:
        raise AssertionError(f"InfluxQL error for {q!r}: {exc.error}") from None


def wait_for(pred, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
