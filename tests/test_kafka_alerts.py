"""The alert layer against the real Kafka and InfluxDB: lifecycle on the alert topic,
`telltale alerts` filters, and `telltale notify` delivering at-least-once to a webhook."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from telltale.producers import KafkaTransport, Monitor
from telltale.simulate import SimRun, simulate
from tests.support import wait_for
from tests.support.influx import influxql
from tests.support.kafka import TopicReader
from tests.support.servers import WebhookServer
from tests.support.services import config_env

pytestmark = pytest.mark.services


def publish(cfg, run: str, events) -> None:
    mon = Monitor(run, KafkaTransport(cfg.kafka, cfg.metrics_topic), linger=0.01)
    for s, ts, k, m in events:
        mon.log(m, step=s, kind=k, ts=ts)
    assert mon.close(30) is not False  # close() sends the end-of-run marker


def flapping_events(n: int = 1000, t0: float = 1.7e9):
    """A queue-depth gauge that goes NaN for one step every 30 steps."""
    for s in range(1, n + 1):
        v = float("nan") if s % 30 == 0 else 5.0 + (s % 7) * 0.01
        yield s, t0 + s * 0.05, "train", {"queue_depth": v}


def incidents(records):
    out: dict[str, list] = {}
    for a in records:
        out.setdefault(a["id"], []).append(a)
    return out


def test_divergence_fires_once_and_resolves_once_and_flapping_stays_quiet(kafka_config,
                                                                          start_worker):
    cfg = kafka_config
    worker = start_worker(cfg)
    worker.wait_ready()
    reader = TopicReader(cfg, cfg.alerts_topic)
    t0 = time.time() - 700 * 0.05
    publish(cfg, "k-diverge", simulate(SimRun("k-diverge", "divergence", 250, seed=4), t0=t0))
    publish(cfg, "k-flap", flapping_events(t0=t0))

    def resolved(run):
        recs = [a for a in reader.values() if a["run"] == run]
        inc = incidents(recs)
        return recs if inc and all(r[-1]["state"] == "resolved" for r in inc.values()) else None

    div = wait_for(lambda: resolved("k-diverge"), timeout=60, what="k-diverge resolved")
    flap = wait_for(lambda: resolved("k-flap"), timeout=60, what="k-flap resolved")
    time.sleep(1.0)  # nothing else may follow
    reader.close()
    assert [a for a in reader.values() if a["run"] == "k-diverge"] == div

    # the learning-rate jump and the loss divergence it causes are one incident: one page
    # (the jump), the divergence joins it, and one all-clear when the run ends
    (f,) = [a for a in div if a["state"] == "firing"]
    assert f["metric"] == "lr" and f["detector"] == "jump" and f["schema"] == "telltale.alert/2"
    assert f["severity"] == "critical" and 0 < f["score"] <= 1
    loss = [a for a in div if a["metric"] == "loss" and a["detector"] == "divergence"]
    assert loss and loss[0]["state"] == "updated" and loss[0]["id"] == f["id"]
    assert "joins the incident of lr" in loss[0]["message"] and "learning rate" in \
        loss[0]["action"]
    r = [a for a in div if a["id"] == f["id"]][-1]
    assert r["state"] == "resolved" and r["stats"]["resolved_because"] == "run ended"
    assert {"lr", "loss"} <= set(r["contributors"])
    for recs in incidents(div).values():  # every incident: one page, one all-clear
        states = [a["state"] for a in recs]
        assert states.count("firing") == 1 and states[-1] == "resolved", states

    # the flapping series: one incident, a bounded number of records, not one per flap
    assert len(incidents(flap)) == 1
    assert Counter(a["state"] for a in flap)["firing"] == 1
    assert len(flap) <= 3 + 1000 // 200, [(a["state"], a["step"]) for a in flap]

    # the alerts measurement carries the lifecycle state and the explanation
    rows = wait_for(lambda: influxql(cfg, 'SELECT "id","explanation","step" FROM "alerts" '
                                          'WHERE "run"=\'k-diverge\' GROUP BY "state"'),
                    what="alerts in InfluxDB")
    by_state = {s["tags"]["state"]: s["values"] for s in rows}
    assert {"firing", "resolved"} <= set(by_state) <= {"firing", "updated", "resolved"}
    assert f["id"] in {v[1] for v in by_state["firing"]}
    assert all(v[2] for vs in by_state.values() for v in vs)

    # `telltale alerts` filters, and names its consumer group
    def tail(*flags):
        proc = subprocess.run([sys.executable, "-m", "telltale", "alerts", "--from-beginning",
                               "--timeout", "3", "--json", *flags], env=config_env(cfg),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "consumer group" in proc.stderr and "--group" in proc.stderr
        return [json.loads(x) for x in proc.stdout.splitlines()]

    got = tail("--run", "k-*", "--severity", "critical", "--state", "firing", "--metric", "l*")
    assert got == [a for a in div + flap if a["severity"] == "critical"
                   and a["state"] == "firing" and a["metric"].startswith("l")]
    assert got and tail("--run", "k-flap", "--state", "resolved") == \
        [a for a in flap if a["state"] == "resolved"]


def test_notifier_delivers_every_alert_although_the_webhook_was_down(kafka_config,
                                                                      start_worker, tmp_path):
    cfg = kafka_config
    worker = start_worker(cfg)
    worker.wait_ready()
    hook = WebhookServer()  # not started yet: the receiver is down
    conf = tmp_path / "notify.yaml"
    conf.write_text(f"handlers:\n  ops: {{type: webhook, url: '{hook.url}', timeout: 2}}\n"
                    "group_wait: 0.2\nmax_attempts: 1000\nbackoff_initial: 0.1\n"
                    "backoff_max: 0.5\n")
    logs = []

    def notifier():
        log = open(tmp_path / f"notify-{len(logs)}.log", "wb")
        logs.append(log.name)
        return subprocess.Popen([sys.executable, "-m", "telltale", "notify", "--config",
                                 str(conf), "--from-beginning"], env=config_env(cfg),
                                stdout=log, stderr=subprocess.STDOUT)

    first = notifier()
    reader = TopicReader(cfg, cfg.alerts_topic)
    t0 = time.time() - 700 * 0.05
    runs = [SimRun("n-spike", "spike", 300, seed=2), SimRun("n-nan", "nan", 420, seed=3)]
    for sim in runs:
        publish(cfg, sim.run, simulate(sim, t0=t0))
    def all_resolved():  # the runs ended: each of their incidents has its resolved record
        inc = incidents(reader.values())
        return ({a["run"] for a in reader.values()} == {r.run for r in runs}
                and all(v[-1]["state"] == "resolved" for v in inc.values()))

    wait_for(all_resolved, timeout=60, what="the runs' alerts on the topic")
    try:
        wait_for(lambda: "retry" in open(logs[0]).read(), timeout=30,
                 what="the notifier to retry the unreachable webhook")
        first.send_signal(signal.SIGTERM)  # stops mid-retry: nothing was committed
        assert first.wait(30) == 0, open(logs[0]).read()
        assert hook.received == []
        second = notifier()  # the same consumer group picks up where nothing was committed
        time.sleep(2.0)
        hook.start()  # the receiver is back
        reader.close()
        on_topic = sorted(f"{a['id']}:{a['state']}:{a['step']}" for a in reader.values())
        wait_for(lambda: len({k for k, _ in hook.received}) >= len(on_topic), timeout=60,
                 what="every alert at the webhook")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                p.kill()
        hook.close()
    got = [k for k, _ in hook.received]
    assert sorted(set(got)) == on_topic  # no alert lost
    for key, body in hook.received:  # duplicates, if any, carry the same key
        a = body["alert"]
        assert key == f"{a['id']}:{a['state']}:{a['step']}"
    print(f"notifier: {len(on_topic)} alerts on the topic, {len(got)} webhook deliveries")


def test_notifier_dead_letters_what_it_cannot_deliver_and_honours_silences(kafka_config,
                                                                           tmp_path):
    from kafka import KafkaProducer

    from telltale.streams.topics import ensure_topics

    cfg = kafka_config
    ensure_topics(cfg)
    env = config_env(cfg)
    hook = WebhookServer().start()
    hook.status = 500  # up, but failing every request
    conf = tmp_path / "notify.json"
    conf.write_text(json.dumps({"handlers": {"ops": {"type": "webhook", "url": hook.url}},
                                "group_wait": 0.1, "max_attempts": 2,
                                "backoff_initial": 0.1}))
    sil = subprocess.run([sys.executable, "-m", "telltale", "silence", "add", "--run", "quiet-*",
                          "--for", "10m"], env=env, capture_output=True, text=True, timeout=60)
    assert sil.returncode == 0 and "silenced until" in sil.stdout, sil.stderr
    dead = TopicReader(cfg, cfg.deadletter_topic)
    prod = KafkaProducer(bootstrap_servers=cfg.kafka)
    recs = [{"schema": "telltale.alert/2", "id": f"x{i}", "state": "firing", "run": run,
             "metric": "loss", "rank": "0", "detector": "zscore", "severity": "warning",
             "step": 10 + i, "message": "loss is high"}
            for i, run in enumerate(["loud", "loud", "quiet-1"])]
    for r in recs:
        prod.send(cfg.alerts_topic, key=r["run"].encode(), value=json.dumps(r).encode())
    prod.flush()
    prod.close()
    try:
        proc = subprocess.run([sys.executable, "-m", "telltale", "notify", "--config", str(conf),
                               "--from-beginning", "--idle-exit", "3"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        got = wait_for(lambda: len(dead.records) >= 2 and dead.values(), timeout=30,
                       what="two dead-lettered alerts")
    finally:
        dead.close()
        hook.close()
    assert sorted(json.loads(d["raw"])["id"] for d in got) == ["x0", "x1"]
    assert all(d["reason"] == "notify: handler 'ops' failed 2 times: "  # the path is not shown
               f"http://127.0.0.1:{hook.port}/… answered "
               "HTTP 500" for d in got)
    assert "'silenced': 1" in proc.stderr and "'dead_lettered': 2" in proc.stderr
