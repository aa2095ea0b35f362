"""`telltale doctor` on the plain services: healthy facts, then what it says when topics are
missing, the worker is gone or InfluxDB is down."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from telltale.producers import KafkaTransport, Monitor
from tests.support import ROOT, wait_for
from tests.support.services import config_env

pytestmark = pytest.mark.services


def doctor(cfg, *args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**config_env(cfg), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "telltale", "doctor", *args], env=env,
                          capture_output=True, text=True, timeout=90)


def test_healthy_deployment_then_worker_gone(kafka_config, start_worker):
    cfg = kafka_config
    worker = start_worker(cfg)
    worker.wait_ready()
    mon = Monitor("doc-run", KafkaTransport(cfg.kafka, cfg.metrics_topic), linger=0.01)
    for s in range(1, 201):
        mon.log({"loss": 1.0 / s}, step=s)
    assert mon.close(30) is not False
    wait_for(lambda: worker.status().get("runs", {}).get("doc-run", 0) >= 200, timeout=60,
             what="the worker processed the run")
    data_dir = str(worker.data_dir)

    def healthy():
        res = doctor(cfg, "--data-dir", data_dir, "--json")
        return res if res.returncode == 0 else None
    res = wait_for(healthy, timeout=30, interval=1.0, what="doctor exit 0 (offsets committed)")
    doc = json.loads(res.stdout)
    by = {c["name"]: c for c in doc["checks"]}
    assert doc["healthy"] is True
    assert by["topics"]["facts"]["partitions"] == {cfg.metrics_topic: 4, cfg.alerts_topic: 4,
                                                   cfg.deadletter_topic: 4}
    assert by["lag"]["facts"]["lag"] == 0 and by["lag"]["facts"]["messages"] > 0
    assert by["deadletter"]["facts"]["messages"] == 0
    assert by["retention"]["status"] == "ok" and "autogen" in by["retention"]["detail"]
    assert by["worker"]["status"] == "ok" and by["worker"]["facts"]["runs"] == 1

    text = doctor(cfg, "--data-dir", data_dir)
    assert text.returncode == 0 and text.stdout.splitlines()[-1] == "healthy", text.stdout
    assert f"{cfg.metrics_topic} (4 partitions)" in text.stdout

    worker.stop()  # its status file goes stale
    time.sleep(11)
    gone = doctor(cfg, "--data-dir", data_dir)
    assert gone.returncode == 1, gone.stdout
    assert "worker status is" in gone.stdout and "not running" in gone.stdout
    assert "NOT healthy: 1 problem(s): worker" in gone.stdout


def test_missing_topics_and_database(kafka_config):
    res = doctor(kafka_config)  # nothing has run with this prefix and database
    assert res.returncode == 1
    assert f"missing topic(s) {kafka_config.metrics_topic}" in res.stdout
    assert "start 'telltale worker' once" in res.stdout
    assert f"database '{kafka_config.influx_db}' does not exist" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_influxdb_down_and_no_broker(kafka_config):
    script = ["bash", str(ROOT / "scripts" / "services.sh")]
    subprocess.run([*script, "stop-influx"], check=True, capture_output=True, timeout=60)
    try:
        res = doctor(kafka_config, "--json")
    finally:
        subprocess.run([*script, "start-influx", "--keep-data"], check=True,
                       capture_output=True, timeout=120)
    assert res.returncode == 1, res.stdout
    doc = json.loads(res.stdout)
    influx = next(c for c in doc["checks"] if c["name"] == "influxdb")
    assert doc["healthy"] is False and influx["status"] == "fail"
    assert "is not reachable" in influx["detail"] and "TELLTALE_INFLUX_URL" in influx["detail"]

    nobroker = doctor(kafka_config, env_extra={"TELLTALE_KAFKA": "127.0.0.1:1"})
    assert nobroker.returncode == 1
    assert "Kafka at 127.0.0.1:1 is not reachable (no broker answers)" in nobroker.stdout
