"""docker-compose.yml describes the same stack as scripts/services.sh (Docker can't run here)."""

import re

import yaml

from tests.support import ROOT


def test_compose_parses_and_matches_the_local_scripts():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = doc["services"]
    assert set(svc) == {"kafka", "influxdb", "chronograf", "worker", "demo-producer"}
    script = (ROOT / "scripts" / "services.sh").read_text()
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([\d.]+)<", pom).group(1)
    assert svc["kafka"]["image"] == f"apache/kafka:{kafka_version}"
    influx_version = re.search(r"INFLUX_VERSION=([\d.]+)", script).group(1)
    assert svc["influxdb"]["image"] == f"influxdb:{influx_version}"
    assert svc["influxdb"]["environment"]["INFLUXDB_HTTP_FLUX_ENABLED"] == "true"
    assert "INFLUXDB_HTTP_FLUX_ENABLED=true" in script
    assert svc["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    env = svc["worker"]["environment"]
    assert env["TELLTALE_KAFKA"] == "kafka:9092" and env["TELLTALE_INFLUX_URL"].endswith(":8086")
    assert svc["demo-producer"]["environment"] == env  # one set of settings for both
    assert svc["worker"]["command"] == ["worker"]
    assert svc["demo-producer"]["command"][:2] == ["demo", "--publish"]
    for name in ("telltale", "producers", "streams", "detectors", "sinks"):
        assert f"COPY {name} ./{name}" in (ROOT / "Dockerfile").read_text()
