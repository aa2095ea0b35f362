"""Security against the secured services (scripts/services.sh start-secure): Kafka with
SASL_SSL + SCRAM-SHA-512 and ACLs, InfluxDB with authentication.

Every client takes its credentials from env vars or secret files; a wrong password is a
clear one-line error; the producer's principal cannot read the alert topic; no password
appears in logs, CLI output, doctor output or exceptions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, wait_for

from telltale.access import AccessError, influx_query
from telltale.config import Config
from telltale.producers import KafkaTransport, Monitor
from telltale.simulate import SimRun, simulate

pytestmark = pytest.mark.services


@pytest.fixture(scope="session")
def secure() -> dict:
    """Start the secured Kafka and InfluxDB (fail loudly if they cannot); stop them after."""
    script = str(ROOT / "scripts" / "services.sh")
    proc = subprocess.run(["bash", script, "start-secure"], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        pytest.fail("could not start the secured Kafka/InfluxDB with scripts/services.sh "
                    "start-secure:\n" + proc.stderr[-4000:], pytrace=False)
    env = dict(line[len("export "):].split("=", 1) for line in proc.stdout.splitlines()
               if line.startswith("export "))
    sec = Path(env["TELLTALE_SECURE_DIR"])
    token = sec / "influx.token"  # InfluxDB 1.8 token = user:password
    token.write_text(f"admin:{(sec / 'influx-admin.password').read_text().strip()}")
    token.chmod(0o600)
    env["passwords"] = {u: (sec / f"{u}.password").read_text().strip()
                        for u in ("admin", "producer", "worker", "alerts", "influx-admin")}
    yield env
    subprocess.run(["bash", script, "stop-secure"], capture_output=True, timeout=120)


def client_env(secure: dict, user: str, tmp: Path, via_file: bool = True,
               password: str | None = None) -> dict:
    """TELLTALE_* env for one Kafka principal (password from a file or the env var)."""
    sec = Path(secure["TELLTALE_SECURE_DIR"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env.update({
        "TELLTALE_KAFKA": secure["TELLTALE_SECURE_KAFKA"],
        "TELLTALE_TOPIC_PREFIX": secure["TELLTALE_SECURE_PREFIX"],
        "TELLTALE_APP_ID": secure["TELLTALE_SECURE_APP_ID"],
        "TELLTALE_INFLUX_URL": secure["TELLTALE_SECURE_INFLUX_URL"],
        "TELLTALE_INFLUX_DB": "telltale_sec",
        "TELLTALE_INFLUX_TOKEN_FILE": str(sec / "influx.token"),
        "TELLTALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TELLTALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TELLTALE_KAFKA_SASL_USERNAME": user,
        "TELLTALE_KAFKA_SSL_CAFILE": secure["TELLTALE_SECURE_CAFILE"],
        "TELLTALE_DATA_DIR": str(tmp / f"data-{user}"),
        "TELLTALE_LOG_LEVEL": "warning",
    })
    if password is not None or not via_file:
        env["TELLTALE_KAFKA_SASL_PASSWORD"] = password or secure["passwords"][user]
    else:
        env["TELLTALE_KAFKA_SASL_PASSWORD_FILE"] = str(sec / f"{user}.password")
    return env


def telltale(args, env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telltale", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_no_secret(text: str, secure: dict) -> None:
    for user, pw in secure["passwords"].items():
        assert pw not in text, f"the {user} password appears in the output"


def test_pipeline_with_credentials_and_no_secret_anywhere(secure, tmp_path):
    worker_env = client_env(secure, "worker", tmp_path)  # password from a file
    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "telltale", "worker"], env=worker_env,
                              cwd=tmp_path, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    status = Path(worker_env["TELLTALE_DATA_DIR"]) / "worker-status.json"
    try:
        def ready():
            assert worker.poll() is None, log_path.read_text()
            try:
                return json.loads(status.read_text()).get("assigned")
            except (OSError, ValueError):
                return None
        wait_for(ready, timeout=90, what="secured worker assigned partitions")

        # the producer library, password from the env var
        penv = client_env(secure, "producer", tmp_path, via_file=False)
        pcfg = Config.from_env(penv)
        assert secure["passwords"]["producer"] not in repr(pcfg)
        mon = Monitor("sec-div", KafkaTransport(pcfg.kafka, pcfg.metrics_topic,
                                                **pcfg.kafka_options()), linger=0.01)
        t0 = time.time() - 700 * 0.05
        sent = 0
        for s, ts, k, m in simulate(SimRun("sec-div", "divergence", 250, seed=4), t0=t0):
            mon.log(m, step=s, kind=k, ts=ts)
            sent += 1
        assert mon.close(30) is not False and mon.stats()["queued"] == 0

        # the alert consumer, as the alerts-reader principal
        alerts = telltale(["alerts", "--from-beginning", "--json", "--state", "firing",
                           "--max", "1", "--timeout", "60"],
                          client_env(secure, "alerts", tmp_path), timeout=120)
        assert alerts.returncode == 0, alerts.stderr
        first = json.loads(alerts.stdout.splitlines()[0])
        assert first["run"] == "sec-div" and first["state"] == "firing"

        # the notifier, as the same reader (silences topic, dead-letter for failures)
        conf = tmp_path / "notify.json"
        conf.write_text(json.dumps({"handlers": {"out": {"type": "stdout"}},
                                    "group_wait": 0.2}))
        nout, nerr = tmp_path / "notify.out", tmp_path / "notify.err"
        notify = subprocess.Popen([sys.executable, "-m", "telltale", "notify", "--config",
                                   str(conf), "--from-beginning"],
                                  env=client_env(secure, "alerts", tmp_path),
                                  stdout=open(nout, "wb"), stderr=open(nerr, "wb"))
        try:
            try:
                wait_for(lambda: "sec-div" in nout.read_text(), timeout=60,
                         what="telltale notify delivering the alert")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nnotify stderr:\n{nerr.read_text()}\nstdout:\n"
                                     f"{nout.read_text()}") from None
        finally:
            notify.terminate()
            notify.wait(30)
        assert notify.returncode == 0 and "delivered" in nerr.read_text(), nerr.read_text()

        # every metric value landed in the authenticated InfluxDB
        icfg = Config.from_env(worker_env)
        q = "SELECT count(\"step\") FROM metrics WHERE run = 'sec-div'"  # one point per event

        def counted():
            res = influx_query(icfg, q, db="telltale_sec")
            series = res[0].get("series", []) if res else []
            n = series[0]["values"][0][1] if series else 0
            return n if n >= sent else None
        assert wait_for(counted, timeout=60, what=f"{sent} events in InfluxDB") == sent
        from telltale.ui.data import InfluxSource  # the dashboard's reads, authenticated

        assert "sec-div" in [r["run"] for r in InfluxSource(icfg).runs()]

        def doctor_healthy():  # healthy once the worker has committed its offsets
            res = telltale(["doctor", "--data-dir", worker_env["TELLTALE_DATA_DIR"]],
                           client_env(secure, "admin", tmp_path))
            runs.append(res)
            return res.returncode == 0
        runs: list = []
        try:
            wait_for(doctor_healthy, timeout=30, interval=1.0, what="doctor healthy")
        except AssertionError:
            raise AssertionError(runs[-1].stdout + runs[-1].stderr) from None
        doctor = runs[-1]
        assert "as 'admin'" in doctor.stdout and "healthy" in doctor.stdout.splitlines()[-1]
        outputs = [alerts.stdout, alerts.stderr, nout.read_text(), nerr.read_text(),
                   doctor.stdout, doctor.stderr]
    finally:
        worker.terminate()
        worker.wait(30)
    for text in [*outputs, log_path.read_text(errors="replace")]:
        assert_no_secret(text, secure)


def test_wrong_kafka_password_is_a_clear_error_fast(secure, tmp_path):
    for cmd, user in ((["worker"], "worker"), (["alerts", "--timeout", "5"], "alerts"),
                      (["doctor"], "admin")):
        env = client_env(secure, user, tmp_path, password="not-the-password")
        t = time.monotonic()
        res = telltale(cmd, env, timeout=60)
        took = time.monotonic() - t
        out = res.stdout + res.stderr
        assert res.returncode != 0, out
        assert "rejected the credentials" in out, out
        assert f"user {user!r}" in out and "TELLTALE_KAFKA_SASL_PASSWORD" in out, out
        assert "Traceback" not in out, out
        assert took < 45, f"a wrong password must not hang ({took:.0f} s)"  # 10 s bootstrap
        assert "not-the-password" not in out
        assert_no_secret(out, secure)


def test_wrong_influx_password_is_a_clear_error(secure, tmp_path):
    bad = tmp_path / "bad.token"
    bad.write_text("admin:not-the-password")
    env = {**client_env(secure, "worker", tmp_path), "TELLTALE_INFLUX_TOKEN_FILE": str(bad)}
    res = telltale(["worker"], env, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out, out
    assert "InfluxDB" in out and "rejected the credentials" in out, out
    assert "TELLTALE_INFLUX_TOKEN" in out and "not-the-password" not in out, out
    # the dashboard's reads say the same, without the secret
    from telltale.ui.data import DataError, InfluxSource

    cfg = Config.from_env(env)
    with pytest.raises(DataError, match="rejected the credentials") as err:
        InfluxSource(cfg).query("SHOW MEASUREMENTS")
    assert "not-the-password" not in str(err.value) + repr(cfg)
    with pytest.raises(AccessError, match="TELLTALE_INFLUX_TOKEN"):
        influx_query(cfg, "SHOW DATABASES")


def test_producer_principal_writes_metrics_only(secure, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    cfg = Config.from_env(client_env(secure, "producer", tmp_path))
    opts = cfg.kafka_options()
    tp = TopicPartition(cfg.alerts_topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka, enable_auto_commit=False, **opts)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.beginning_offsets([tp])
        consumer.assign([tp])
        consumer.seek(tp, 0)
        assert consumer.poll(timeout_ms=2000) == {}  # nothing comes, the topic has alerts
    finally:
        consumer.close()
    acfg = Config.from_env(client_env(secure, "alerts", tmp_path))  # the reader may
    reader = KafkaConsumer(bootstrap_servers=acfg.kafka, **acfg.kafka_options())
    try:
        assert reader.beginning_offsets([tp]) == {tp: 0}
    finally:
        reader.close()
    # `telltale alerts` as the producer: a clear refusal, not an endless reconnect
    res = telltale(["alerts", "--from-beginning", "--timeout", "10"],
                   client_env(secure, "producer", tmp_path), timeout=60)
    assert res.returncode == 1 and "may not read" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    producer = KafkaProducer(bootstrap_servers=cfg.kafka, **opts)
    try:
        producer.send(cfg.metrics_topic, key=b"acl", value=b"{}").get(15)  # allowed
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(cfg.alerts_topic, key=b"acl", value=b"{}").get(15)
    finally:
        producer.close(timeout=5)


def test_producer_with_a_wrong_password_keeps_the_trainer_going(secure, tmp_path):
    cfg = Config.from_env(client_env(secure, "producer", tmp_path, password="not-the-password"))
    mon = Monitor("sec-badpw", KafkaTransport(cfg.kafka, cfg.metrics_topic,
                                              **cfg.kafka_options()), linger=0.01)
    for s in range(1, 101):
        mon.log({"loss": 1.0 / s}, step=s)  # returns at once: the queue takes it
    wait_for(lambda: mon.stats()["send_failures"] >= 1, timeout=40, what="a failed send")
    stats = mon.stats()
    mon.close(timeout=1)
    assert stats["sent"] == 0 and stats["queued"] >= 100
    err = stats["last_error"]
    assert "rejected the credentials" in err and "user 'producer'" in err, err
    assert "TELLTALE_KAFKA_SASL_PASSWORD" in err and "not-the-password" not in err
