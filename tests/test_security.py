"""Security against the secured services (scripts/services.sh start-secure): Kafka with
SASL_SSL + SCRAM-SHA-512 and ACLs (its controller listener TLS with client certificates),
InfluxDB with authentication and least-privilege users.

Every client takes its credentials from env vars or secret files; a wrong password is a
clear one-line error; each principal is limited to its ACLs; no listener answers a request
without credentials; the worker runs with a write-only InfluxDB user; no secret appears in
the process list while the services start, in logs, CLI output, doctor output, exceptions,
dead letters, or in files another user can read.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from telltale.access import AccessError
from telltale.config import Config
from telltale.producers import KafkaTransport, Monitor
from telltale.simulate import SimRun, simulate
from telltale.sinks.influx import influx_query
from tests.support import ROOT, wait_for
from tests.support.servers import WebhookServer, free_port

pytestmark = pytest.mark.services

SCRIPT = str(ROOT / "scripts" / "services.sh")
SECRETS = ("admin", "producer", "worker", "alerts", "influx-admin", "influx-writer",
           "influx-reader", "store")


class CmdlineWatch(threading.Thread):
    """Collects every distinct process command line seen while it runs (from /proc)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            cmd = f.read()
                    except OSError:
                        continue
                    if cmd:
                        self.seen.add(cmd.replace(b"\0", b" ").decode(errors="replace"))

    def stop(self) -> set[str]:
        self.done.set()
        self.join(10)
        return self.seen


@pytest.fixture(scope="session")
def secure() -> dict:
    """Start the secured Kafka and InfluxDB afresh (fail loudly if they cannot), watching the
    process list while they start; stop them after."""
    subprocess.run(["bash", SCRIPT, "stop-secure"], capture_output=True, timeout=120)
    watch = CmdlineWatch()
    watch.start()
    try:
        proc = subprocess.run(["bash", SCRIPT, "start-secure"], capture_output=True, text=True,
                              timeout=900)
    finally:
        cmdlines = watch.stop()
    if proc.returncode != 0:
        pytest.fail("could not start the secured Kafka/InfluxDB with scripts/services.sh "
                    "start-secure:\n" + proc.stderr[-4000:], pytrace=False)
    env = dict(line[len("export "):].split("=", 1) for line in proc.stdout.splitlines()
               if line.startswith("export "))
    sec = Path(env["TELLTALE_SECURE_DIR"])
    env["passwords"] = {u: (sec / f"{u}.password").read_text().strip() for u in SECRETS
                        if (sec / f"{u}.password").exists()}
    env["cmdlines"] = cmdlines
    env["start_output"] = proc.stdout + proc.stderr
    yield env
    subprocess.run(["bash", SCRIPT, "stop-secure"], capture_output=True, timeout=120)


def client_env(secure: dict, user: str, tmp: Path, via_file: bool = True,
               password: str | None = None, influx_user: str = "writer") -> dict:
    """TELLTALE_* env for one Kafka principal (password from a file or the env var) and one
    InfluxDB user (writer: the worker's; reader: the page's; admin: set-up)."""
    sec = Path(secure["TELLTALE_SECURE_DIR"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELLTALE_")}
    env.update({
        "TELLTALE_KAFKA": secure["TELLTALE_SECURE_KAFKA"],
        "TELLTALE_TOPIC_PREFIX": secure["TELLTALE_SECURE_PREFIX"],
        "TELLTALE_APP_ID": secure["TELLTALE_SECURE_APP_ID"],
        "TELLTALE_INFLUX_URL": secure["TELLTALE_SECURE_INFLUX_URL"],
        "TELLTALE_INFLUX_DB": secure.get("TELLTALE_SECURE_INFLUX_DB", "telltale_sec"),
        "TELLTALE_INFLUX_TOKEN_FILE": str(sec / f"influx-{influx_user}.token"),
        "TELLTALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TELLTALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TELLTALE_KAFKA_SASL_USERNAME": user,
        "TELLTALE_KAFKA_SSL_CAFILE": secure["TELLTALE_SECURE_CAFILE"],
        "TELLTALE_DATA_DIR": str(tmp / f"data-{user}"),
        "TELLTALE_LOG_LEVEL": "warning",
        "TELLTALE_HASH_SALT_FILE": str(tmp / "salt" / "hash-salt"),
        "TELLTALE_SPOOL_DIR": str(tmp / "spool"),
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


def private_violations(root: Path) -> list[str]:
    """Files and folders under ``root`` (and itself) that another user could read."""
    bad = []
    for p in [root, *root.rglob("*")]:
        try:
            mode = p.lstat().st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISLNK(mode) and mode & 0o077:
            bad.append(f"{p} {stat.filemode(mode)}")
    return bad


# -- raw Kafka requests (no client library: exactly what an attacker would send) ----------


def _recv(s, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def kafka_raw(port: int, api_key: int, version: int, body: bytes = b"",
              ctx: ssl.SSLContext | None = None) -> bytes | None:
    """One request to 127.0.0.1:``port``; the response (after the correlation id), or None
    when the listener refused it (closed, TLS failed, no answer in 5 s)."""
    cid = b"attacker"
    req = struct.pack(">hhih", api_key, version, 7, len(cid)) + cid + body
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        with s:
            s.sendall(struct.pack(">i", len(req)) + req)
            head = _recv(s, 4)
            if head is None:
                return None
            data = _recv(s, struct.unpack(">i", head)[0])
    except (OSError, ssl.SSLError):
        return None
    if data is None or struct.unpack(">i", data[:4])[0] != 7:
        return None
    return data[4:]


def _kstr(text: str) -> bytes:
    b = text.encode()
    return struct.pack(">h", len(b)) + b


def create_acl_request(topic: str, principal: str) -> bytes:
    """CreateAcls v1 body: ALLOW ``principal`` READ on the literal topic, from any host."""
    return (struct.pack(">i", 1) + struct.pack(">b", 2) + _kstr(topic) + struct.pack(">b", 3)
            + _kstr(principal) + _kstr("*") + struct.pack(">bb", 3, 3))


def create_acl_error(resp: bytes) -> int:
    """The error code of the first result of a CreateAcls v1 response body."""
    _throttle, n = struct.unpack(">ii", resp[:8])
    assert n == 1
    return struct.unpack(">h", resp[8:10])[0]


def broker_properties(secure: dict) -> str:
    return (Path(secure["TELLTALE_SECURE_DIR"]).parent / "kafka-secure"
            / "server.properties").read_text()


def controller_port(secure: dict) -> int:
    voters = next(line for line in broker_properties(secure).splitlines()
                  if line.startswith("controller.quorum.voters="))
    return int(voters.rsplit(":", 1)[1])


# -- the tests -------------------------------------------------------------------------------


def test_no_listener_answers_a_request_without_credentials(secure, tmp_path):
    """The controller listener wants the broker's own client certificate and the client
    listener wants SASL: a raw CreateAcls granting the producer the alert topic is refused on
    both, and no ANONYMOUS principal is a super user."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    sec = Path(secure["TELLTALE_SECURE_DIR"])
    alerts = f"{secure['TELLTALE_SECURE_PREFIX']}.alerts"
    grant = create_acl_request(alerts, "User:producer")
    ctrl = controller_port(secure)
    client = int(secure["TELLTALE_SECURE_KAFKA"].rsplit(":", 1)[1])
    trusting = ssl.create_default_context(cafile=secure["TELLTALE_SECURE_CAFILE"])
    for port in (ctrl, client):
        assert kafka_raw(port, 30, 1, grant) is None, f"port {port} took a plain-text CreateAcls"
        assert kafka_raw(port, 30, 1, grant, ctx=trusting) is None, \
            f"port {port} took a CreateAcls over TLS without credentials"
    # the probe itself works: with the broker's certificate the controller answers
    broker = ssl.create_default_context(cafile=secure["TELLTALE_SECURE_CAFILE"])
    broker.load_cert_chain(sec / "broker.crt", sec / "broker.key")
    resp = kafka_raw(ctrl, 18, 0, b"", ctx=broker)  # ApiVersions v0
    assert resp is not None and struct.unpack(">h", resp[:2])[0] == 0
    assert "ANONYMOUS" not in broker_properties(secure)
    cfg = Config.from_env(client_env(secure, "producer", tmp_path))
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka, enable_auto_commit=False,
                             **cfg.kafka_options())
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.beginning_offsets([TopicPartition(alerts, 0)])
    finally:
        consumer.close()


def test_no_secret_on_a_command_line_while_the_services_start(secure):
    cmdlines = secure["cmdlines"]
    # the watch was fast enough to see the set-up commands (a JVM each)
    assert any("StorageTool" in c for c in cmdlines), sorted(cmdlines)[:20]
    assert any("kafka.Kafka" in c for c in cmdlines)
    for c in cmdlines:
        assert_no_secret(c, secure)
    assert_no_secret(secure["start_output"], secure)


def test_secured_service_files_are_private(secure):
    svc = Path(secure["TELLTALE_SECURE_DIR"]).parent
    assert (svc / "influx-secure" / "meta" / "meta.db").is_file()  # the users' hashes
    assert any((svc / "kafka-secure" / "data").rglob("*.log"))  # incl. the SCRAM records
    bad = [v for d in ("secure", "kafka-secure", "influx-secure")
           for v in private_violations(svc / d)]
    assert not bad, "readable by other users:\n" + "\n".join(bad[:20])


def test_pipeline_with_least_privilege_and_no_secret_anywhere(secure, tmp_path):
    """Worker: Kafka principal 'worker', InfluxDB user 'writer' (WRITE only, on a database
    it did not create). Page: InfluxDB user 'reader'. Faust's own views are off."""
    worker_env = client_env(secure, "worker", tmp_path)  # password from a file
    web_port = free_port()
    worker_env.update(TELLTALE_WORKER_UI="1", TELLTALE_WEB_PORT=str(web_port),
                      TELLTALE_LOG_LEVEL="debug")  # no secret even in debug logs
    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "telltale", "worker"], env=worker_env,
                              cwd=tmp_path, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    data_dir = Path(worker_env["TELLTALE_DATA_DIR"])
    status = data_dir / "worker-status.json"
    try:
        def ready():
            assert worker.poll() is None, log_path.read_text()
            try:
                return json.loads(status.read_text()).get("assigned")
            except (OSError, ValueError):
                return None
        wait_for(ready, timeout=90, what="secured worker assigned partitions")

        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code
        assert get("/ui/") == 200
        assert get("/table/") == 404 and get("/router/") == 404  # Faust's views: off

        # the producer library, password from the env var, every logger at debug level
        debug_lines: list[str] = []

        class Keep(logging.Handler):
            def emit(self, record):
                debug_lines.append(self.format(record))
        keep, root = Keep(logging.DEBUG), logging.getLogger()
        old_level = root.level
        root.addHandler(keep)
        root.setLevel(logging.DEBUG)
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
        root.removeHandler(keep)
        root.setLevel(old_level)
        assert len(debug_lines) > 10  # kafka-python's debug lines were captured

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

        # every metric value landed in InfluxDB; the page's reader sees them, the writer not
        rcfg = Config.from_env(client_env(secure, "alerts", tmp_path, influx_user="reader"))
        wcfg = Config.from_env(worker_env)
        db = secure.get("TELLTALE_SECURE_INFLUX_DB", "telltale_sec")
        q = "SELECT count(\"step\") FROM metrics WHERE run = 'sec-div'"  # one point per event

        def counted():
            res = influx_query(rcfg, q, db=db)
            series = res[0].get("series", []) if res else []
            n = series[0]["values"][0][1] if series else 0
            return n if n >= sent else None
        assert wait_for(counted, timeout=60, what=f"{sent} events in InfluxDB") == sent
        with pytest.raises(AccessError, match="HTTP 403"):
            influx_query(wcfg, q, db=db)
        from telltale.ui.sources import InfluxSource  # the dashboard's reads, as the reader

        assert "sec-div" in [r["run"] for r in InfluxSource(rcfg).runs()]

        def doctor_healthy():  # healthy once the worker has committed its offsets
            res = telltale(["doctor", "--data-dir", worker_env["TELLTALE_DATA_DIR"]],
                           client_env(secure, "admin", tmp_path, influx_user="reader"))
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
                   doctor.stdout, doctor.stderr, "\n".join(debug_lines)]
    finally:
        worker.terminate()
        worker.wait(30)
    worker_log = log_path.read_text(errors="replace")
    assert "DEBUG" in worker_log  # the worker did log at debug level
    for text in [*outputs, worker_log]:
        assert_no_secret(text, secure)
    bad = private_violations(data_dir)
    assert not bad, "worker files readable by other users:\n" + "\n".join(bad[:20])


def test_alerts_principal_stays_out_of_the_worker_group(secure, tmp_path):
    from kafka.errors import GroupAuthorizationFailedError, RetriableError

    from telltale.access import kafka_admin

    cfg = Config.from_env(client_env(secure, "alerts", tmp_path))
    admin = kafka_admin(cfg)

    def offsets(group):
        try:
            return admin.list_group_offsets({group: None})
        except RetriableError:  # a fresh broker makes its offsets topic and coordinator first
            return None
    try:
        own = f"{cfg.topic_prefix}-alerts-tail-probe"
        wait_for(lambda: offsets(own) is not None, timeout=30, what="its own group's offsets")
        with pytest.raises(GroupAuthorizationFailedError):
            admin.list_group_offsets({secure["TELLTALE_SECURE_APP_ID"]: None})
    finally:
        admin.close()


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


def test_misconfigurations_are_named_for_what_they_are(secure, tmp_path):
    port = secure["TELLTALE_SECURE_KAFKA"].rsplit(":", 1)[1]
    cases = [  # (settings, what the message must say, what it must not)
        ({"TELLTALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
         "does not accept SASL mechanism SCRAM-SHA-256", "TLS"),
        ({"TELLTALE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
         "expects TLS but TELLTALE_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT", "credentials"),
        ({"TELLTALE_KAFKA": f"127.1:{port}"}, "not issued for '127.1'", "CAFILE"),
    ]
    for over, want, unwanted in cases:
        res = telltale(["doctor"], {**client_env(secure, "admin", tmp_path), **over})
        out = res.stdout + res.stderr
        assert res.returncode == 1 and want in out, out
        assert unwanted not in out.split("FAIL", 1)[1].splitlines()[0], out
        assert "Traceback" not in out


def test_silence_commands_say_why_they_fail(secure, tmp_path):
    res = telltale(["silence", "list"],
                   client_env(secure, "alerts", tmp_path, password="not-the-password"))
    assert res.returncode == 1 and "rejected the credentials" in res.stderr, res.stderr
    assert "no silences" not in res.stdout
    res = telltale(["silence", "add", "--run", "x", "--for", "1m"],
                   client_env(secure, "producer", tmp_path))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "'producer' may not use telltale-sec.silences" in res.stderr, res.stderr
    ok = telltale(["silence", "add", "--run", "x", "--for", "1m"],
                  client_env(secure, "alerts", tmp_path))  # the notifier's principal may
    assert ok.returncode == 0, ok.stderr
    sid = ok.stdout.split()[0]
    listed = telltale(["silence", "list"], client_env(secure, "alerts", tmp_path))
    assert listed.returncode == 0 and sid in listed.stdout


def test_doctor_redacts_whole_secrets_only(secure, tmp_path):
    token = tmp_path / "short.token"
    token.write_text("reader:al")  # a wrong, short password that is part of many words
    token.chmod(0o600)
    env = {**client_env(secure, "admin", tmp_path), "TELLTALE_INFLUX_TOKEN_FILE": str(token)}
    res = telltale(["doctor"], env)
    assert res.returncode == 1
    assert "InfluxDB" in res.stdout and "rejected the credentials" in res.stdout, res.stdout
    assert res.stdout.splitlines()[-1].startswith("NOT healthy"), res.stdout
    assert "telltale-sec.metrics" in res.stdout or "missing topic" in res.stdout
    doc = json.loads(telltale(["doctor", "--json"], env).stdout)
    assert {c["status"] for c in doc["checks"]} <= {"ok", "warn", "fail"}


def test_producer_with_a_wrong_password_says_so_at_once(secure, tmp_path):
    cfg = Config.from_env(client_env(secure, "producer", tmp_path, password="not-the-password"))
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)
    keep = Keep(logging.DEBUG)
    logging.getLogger("telltale").addHandler(keep)
    try:
        mon = Monitor("sec-badpw", KafkaTransport(cfg.kafka, cfg.metrics_topic,
                                                  **cfg.kafka_options()),
                      linger=0.01, retry_backoff=0.05, max_backoff=0.2)
        for s in range(1, 101):
            mon.log({"loss": 1.0 / s}, step=s)  # returns at once: the queue takes it
        wait_for(lambda: mon.stats()["send_failures"] >= 2, timeout=60,
                 what="two failed sends")
        stats = mon.stats()
        said = [r.getMessage() for r in seen if r.levelno >= logging.WARNING]
        mon.close(timeout=1)
    finally:
        logging.getLogger("telltale").removeHandler(keep)
    assert stats["sent"] == 0 and stats["queued"] >= 100
    err = stats["last_error"]
    assert "rejected the credentials" in err and "user 'producer'" in err, err
    assert "TELLTALE_KAFKA_SASL_PASSWORD" in err and "not-the-password" not in err
    # before close: one warning with the reason, not one per retry
    assert len(said) == 1 and "rejected the credentials" in said[0], said
    assert "not-the-password" not in said[0]


def test_only_allowed_metric_names_and_salted_tags_leave_the_trainer(secure, tmp_path,
                                                                      monkeypatch):
    from kafka import KafkaConsumer, TopicPartition

    import telltale as tt
    from telltale.producers.privacy import hash_text
    from telltale.streams.topics import ensure_topics

    acfg = Config.from_env(client_env(secure, "admin", tmp_path))
    ensure_topics(acfg)
    env = client_env(secure, "producer", tmp_path)
    env["TELLTALE_METRIC_NAMES"] = "loss,lr,grad/*"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    run = f"sec-privacy-{os.getpid()}"
    mon = tt.init(run=run, tags={"user": "alice@example.com", "rank": 0}, hash_tags=["user"],
                  spool=False, handle_sigterm=False)
    for s in range(1, 21):
        mon.log({"loss": 1.0 / s, "lr": 0.1, "grad/norm": 1.0, "loss_alice@example.com": 2.0},
                step=s)
    mon.close(30)
    assert mon.stats()["sent"] == 21 and mon.stats()["dropped_metrics"] == 20
    salt_file = tmp_path / "salt" / "hash-salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(salt_file.parent.stat().st_mode) == 0o700
    salt = salt_file.read_text().strip()
    assert len(salt) >= 32 and salt not in repr(mon.privacy)

    c = KafkaConsumer(bootstrap_servers=acfg.kafka, enable_auto_commit=False,
                      **acfg.kafka_options())
    try:
        tps = [TopicPartition(acfg.metrics_topic, p)
               for p in c.partitions_for_topic(acfg.metrics_topic)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        raw: list[bytes] = []

        def all_read():
            for msgs in c.poll(timeout_ms=500).values():
                raw.extend(m.value for m in msgs if m.key == run.encode())
            return sum(v.count(b'"step"') for v in raw) >= 21
        wait_for(all_read, timeout=30, what="the run's batches on the metrics topic")
    finally:
        c.close()
    data = b"".join(raw)
    assert b"grad/norm" in data and b'"loss"' in data
    assert b"alice" not in data  # neither the tag value nor the metric name
    assert hash_text("alice@example.com", salt).encode() in data
    assert hash_text("alice@example.com", "").encode() not in data  # no lookup table


def test_webhook_and_slack_urls_never_shown(secure, tmp_path, caplog):
    """The URL is the secret: failures name scheme://host/… only, on stderr, in logs at
    debug level and in the dead letters on Kafka."""
    import secrets as pysecrets

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    from telltale.sinks.delivery import Notifier, NotifyConfig
    from telltale.streams.topics import ensure_topics

    acfg = Config.from_env(client_env(secure, "admin", tmp_path))
    ensure_topics(acfg)
    hook = WebhookServer().start()
    hook.status = 500
    slack_token, hook_token = pysecrets.token_hex(12), pysecrets.token_hex(12)
    conf = {"handlers": {
        "slack": {"type": "slack",
                  "url": f"http://127.0.0.1:{hook.port}/services/T000/B000/{slack_token}"},
        "ops": {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/h?key={hook_token}"}},
        "group_wait": 0.1, "max_attempts": 2, "backoff_initial": 0.1}
    run = f"sec-redact-{os.getpid()}"
    alert = {"id": "a1", "run": run, "metric": "loss", "rank": "0", "state": "firing",
             "severity": "critical", "step": 5, "detector": "zscore", "message": "loss spiked"}
    try:
        # in process, every logger at debug level
        caplog.set_level(logging.DEBUG)
        dead: list[tuple[dict, str]] = []
        counts = Notifier(NotifyConfig.from_dict(conf), dead_letter=lambda a, r:
                          dead.append((a, r)), sleep=lambda s: None).deliver([alert])
        assert counts and len(dead) == 2
        ours = [r.getMessage() for r in caplog.records  # not the receiver's access log
                if not r.name.startswith("aiohttp")]
        shown = "\n".join(ours) + " ".join(r for _, r in dead) + repr(
            NotifyConfig.from_dict(conf))
        assert f"http://127.0.0.1:{hook.port}/…" in shown
        # through Kafka: `telltale notify` as the alerts principal
        producer = KafkaProducer(bootstrap_servers=acfg.kafka, **acfg.kafka_options())
        producer.send(acfg.alerts_topic, key=run.encode(), value=json.dumps(alert).encode())
        producer.flush(30)
        producer.close()
        cfile = tmp_path / "notify.json"
        cfile.write_text(json.dumps(conf))
        res = telltale(["notify", "--config", str(cfile), "--from-beginning", "--idle-exit", "5",
                        "--group", f"{acfg.topic_prefix}-notify-redact"],
                       {**client_env(secure, "alerts", tmp_path), "TELLTALE_LOG_LEVEL": "debug"},
                       timeout=120)
        assert res.returncode == 0, res.stderr
        assert "dead-lettered" in res.stderr, res.stderr  # (other tests' alerts too)
        shown += res.stdout + res.stderr
    finally:
        hook.close()
    c = KafkaConsumer(bootstrap_servers=acfg.kafka, enable_auto_commit=False,
                      **acfg.kafka_options())
    try:
        tps = [TopicPartition(acfg.deadletter_topic, p)
               for p in c.partitions_for_topic(acfg.deadletter_topic)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        letters: list[bytes] = []

        def both():
            for msgs in c.poll(timeout_ms=500).values():
                letters.extend(m.value for m in msgs if m.key == run.encode())
            return len(letters) >= 2
        wait_for(both, timeout=30, what="two dead letters")
    finally:
        c.close()
    shown += b"".join(letters).decode()
    assert "failed 2 times" in shown
    for token in (slack_token, hook_token, "/services/T000", "key="):
        assert token not in shown, f"{token!r} was shown"


def test_alerts_timeout_bounds_the_wait_for_a_lost_broker(secure, tmp_path):
    """`telltale alerts --timeout` gives up when the broker stays away (runs last: it stops
    the secured broker, and starts it again afresh)."""
    err = tmp_path / "alerts.err"
    proc = subprocess.Popen([sys.executable, "-m", "telltale", "alerts", "--timeout", "8"],
                            env=client_env(secure, "alerts", tmp_path),
                            stdout=subprocess.DEVNULL, stderr=open(err, "wb"))
    pidfile = Path(secure["TELLTALE_SECURE_DIR"]).parent / "kafka-secure" / "kafka.pid"
    try:
        wait_for(lambda: "reading" in err.read_text(), timeout=60, what="alerts reading")
        os.kill(int(pidfile.read_text()), signal.SIGKILL)  # the broker goes away
        t = time.monotonic()
        try:
            rc = proc.wait(90)
        except subprocess.TimeoutExpired:
            raise AssertionError("telltale alerts --timeout 8 still waits for the broker after "
                                 f"90 s:\n{err.read_text()[-2000:]}") from None
        assert rc == 1 and "giving up" in err.read_text(), err.read_text()
        assert time.monotonic() - t < 60
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        res = subprocess.run(["bash", SCRIPT, "start-secure"], capture_output=True, text=True,
                             timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
