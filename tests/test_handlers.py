"""Delivery (sinks/handlers.py, routes.py, silences.py, delivery.py): handlers against real
local servers, routing, silences."""

import json
import subprocess
import sys
import threading
import time

import pytest

from telltale.sinks.delivery import Notifier, NotifyConfig
from telltale.sinks.handlers import ConfigError
from telltale.sinks.silences import FileSilences, Silence, new_silence, parse_duration
from tests.support.servers import SmtpServer, WebhookServer


def alert(run="r1", metric="loss", severity="warning", state="firing", step=10, aid="a1"):
    return {"schema": "telltale.alert/2", "id": aid, "state": state, "run": run,
            "metric": metric, "rank": "0", "kind": "train", "detector": "zscore",
            "severity": severity, "step": step, "ts": 1e9, "value": 3.2, "score": 0.9,
            "message": f"{metric} is high", "explanation": f"{metric} 3.2 at step {step} is 9σ "
            "above its 100-value mean 1 ± 0.2", "cause": "a bad batch", "action": "inspect it",
            "stats": {}, "contributors": [], "first_step": step, "last_step": step}


@pytest.fixture
def hook():
    s = WebhookServer().start()
    yield s
    s.close()


def config(handlers, routes=None, **kw):
    return NotifyConfig.from_dict({"handlers": handlers, **({"routes": routes} if routes else {}),
                                   "backoff_initial": 0.05, "backoff_max": 0.2, **kw})


def test_webhook_posts_each_alert_with_its_idempotency_key(hook):
    n = Notifier(config({"ops": {"type": "webhook", "url": hook.url}}))
    alerts = [alert(), alert(state="resolved", step=60)]
    n.deliver(alerts)
    assert [k for k, _ in hook.received] == ["a1:firing:10", "a1:resolved:60"]
    assert [b["alert"] for _, b in hook.received] == alerts
    assert hook.received[0][1]["schema"] == "telltale.notification/1"


def test_webhook_down_for_a_while_is_retried_with_backoff_and_nothing_is_lost(hook):
    hook.stop()  # connection refused
    sleeps = []
    n = Notifier(config({"ops": {"type": "webhook", "url": hook.url}}, max_attempts=30),
                 sleep=lambda d: (sleeps.append(d), time.sleep(d)))
    t = threading.Thread(target=n.deliver, args=([alert(aid=f"a{i}") for i in range(5)],))
    t.start()
    time.sleep(0.5)
    hook.status = 503  # up, but refusing
    hook.start()
    time.sleep(0.4)
    hook.status = 200
    t.join(10)
    assert not t.is_alive()
    assert sorted(k for k, _ in hook.received) == sorted(f"a{i}:firing:10" for i in range(5))
    assert hook.refused >= 1 and n.counts["retries"] >= 3
    assert sleeps[:3] == [0.05, 0.1, 0.2] and max(sleeps) == 0.2  # exponential, capped


def test_exhausted_retries_go_to_the_dead_letter_callback_with_the_reason(hook):
    hook.status = 500
    dead = []
    n = Notifier(config({"ops": {"type": "webhook", "url": hook.url},
                         "console": {"type": "stdout"}}, max_attempts=3),
                 dead_letter=lambda a, why: dead.append((a["id"], why)), sleep=lambda d: None)
    n.deliver([alert()])
    assert dead == [("a1", "notify: handler 'ops' failed 3 times: "  # the path is not shown
                           f"http://127.0.0.1:{hook.port}/… answered HTTP 500")]
    assert n.counts["delivered"] == 1  # the stdout handler still got it, once


def test_slack_payload_is_one_message_per_run(hook):
    n = Notifier(config({"slack": {"type": "slack", "url": hook.url}}))
    n.deliver([alert(aid="a1"), alert(aid="a2", metric="grad_norm"),
               alert(run="r2", aid="a3", severity="critical")])
    bodies = {b["blocks"][0]["text"]["text"].split("`")[1]: b for _, b in hook.received}
    assert set(bodies) == {"r1", "r2"}
    assert len(bodies["r1"]["blocks"]) == 2 and "2 alert(s) for run r1" in bodies["r1"]["text"]
    assert "*FIRING* [critical]" in bodies["r2"]["blocks"][0]["text"]["text"]
    assert "_likely cause_: a bad batch" in bodies["r2"]["blocks"][0]["text"]["text"]
    keys = [k for k, _ in hook.received]
    assert "a1:firing:10,a2:firing:10" in keys


def test_email_over_smtp_groups_a_run():
    smtp = SmtpServer()
    try:
        n = Notifier(config({"mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port,
                                      "from": "telltale@test", "to": ["oncall@test"]}}))
        n.deliver([alert(aid="a1"), alert(aid="a2", severity="critical", metric="val_loss")])
        deadline = time.monotonic() + 5
        while not smtp.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        smtp.close()
    (msg,) = smtp.messages
    assert msg["Subject"].startswith("[telltale critical] r1: 2 alert(s) (firing)")
    assert msg["To"] == "oncall@test" and msg["Message-ID"].endswith("@telltale>")
    body = msg.get_payload(decode=True).decode()
    assert "val_loss 3.2 at step 10 is 9σ" in body and "cause: a bad batch" in body
    assert "a1:firing:10, a2:firing:10" in msg["X-Telltale-Idempotency-Keys"]


def test_smtp_down_is_a_delivery_error_and_dead_letters():
    from tests.support.servers import free_port

    dead = []
    n = Notifier(config({"mail": {"type": "email", "port": free_port(), "host": "127.0.0.1",
                                  "to": "x@test"}}, max_attempts=2),
                 dead_letter=lambda a, why: dead.append(why), sleep=lambda d: None)
    n.deliver([alert()])
    assert len(dead) == 1 and "SMTP 127.0.0.1" in dead[0]


def test_routes_by_severity_run_metric_and_state(capsys):
    cfg = config({"crit": {"type": "stdout"}, "loss": {"type": "stdout"},
                  "prod": {"type": "stdout"}},
                 routes=[{"match": {"severity": "critical", "state": ["firing", "resolved"]},
                          "to": ["crit"]},
                         {"match": {"metric": "*loss*"}, "to": "loss"},
                         {"match": {"run": "prod-*"}, "to": ["prod", "crit"]}])
    n = Notifier(cfg)
    plan = n.plan([alert(severity="critical", metric="lr", aid="c"),
                   alert(severity="critical", state="updated", metric="lr", aid="u"),
                   alert(metric="val_loss", aid="l"),
                   alert(run="prod-7", metric="lr", aid="p"),
                   alert(metric="lr", aid="none")])
    got = {k: [a["id"] for a in v] for k, v in plan.items()}
    assert got == {("crit", "r1"): ["c"], ("loss", "r1"): ["l"], ("prod", "prod-7"): ["p"],
                   ("crit", "prod-7"): ["p"]}
    assert n.counts["unrouted"] == 2


def test_silences_match_expire_and_are_removed(tmp_path):
    store = FileSilences(str(tmp_path / "silences.json"))
    s = new_silence("1h", "known flaky", run="r1", metric="*loss*")
    store.add(s)
    store.add(Silence(id="old", until=time.time() - 1, severity="critical"))  # expired
    store.add(new_silence("1h", severity="warning", run="r3"))
    n = Notifier(config({"c": {"type": "stdout"}}), silences=store.list)
    plan = n.plan([alert(), alert(metric="lr"), alert(run="r2", severity="critical"),
                   alert(run="r3"), alert(run="r3", severity="critical", aid="c3")])
    assert [a["id"] for v in plan.values() for a in v] == ["a1", "a1", "c3"]
    assert n.counts["silenced"] == 2  # r1's loss (matchers) and r3's warning (severity)
    assert store.remove(s.id) and not store.remove(s.id)
    assert [a["metric"] for v in n.plan([alert()]).values() for a in v] == ["loss"]
    with pytest.raises(ValueError, match="at least one matcher"):
        new_silence("1h")
    assert parse_duration("2h") == 7200 and parse_duration("90s") == 90
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration("soon")


def test_config_errors_say_what_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="type must be one of"):
        NotifyConfig.from_dict({"handlers": {"x": {"type": "pager"}}})
    with pytest.raises(ConfigError, match="url must be http"):
        NotifyConfig.from_dict({"handlers": {"x": {"type": "webhook", "url": "ftp://x"}}})
    with pytest.raises(ConfigError, match="route 0 'to' must list handler names"):
        NotifyConfig.from_dict({"handlers": {"x": {"type": "stdout"}},
                                "routes": [{"to": ["y"]}]})
    with pytest.raises(ConfigError, match="unknown matchers"):
        NotifyConfig.from_dict({"handlers": {"x": {"type": "stdout"}},
                                "routes": [{"match": {"host": "a"}, "to": "x"}]})
    p = tmp_path / "n.yaml"
    p.write_text("handlers:\n  console: {type: stdout}\nroutes:\n"
                 "  - match: {severity: warning, metric: '*loss*'}\n    to: console\n"
                 "group_wait: 0.5\n")
    cfg = NotifyConfig.load(str(p))
    assert cfg.group_wait == 0.5 and cfg.routes[0].metric == "*loss*"
    p.write_text("handlers: [")
    with pytest.raises(ConfigError, match="invalid YAML"):
        NotifyConfig.load(str(p))


def test_embedded_demo_delivers_through_the_same_handlers(hook, tmp_path):
    cfg = tmp_path / "notify.json"
    cfg.write_text(json.dumps({"handlers": {"ops": {"type": "webhook", "url": hook.url}},
                               "routes": [{"match": {"severity": "critical"}, "to": "ops"}],
                               "group_wait": 0.1}))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "telltale", "demo", "--rate", "0",
                           "--store-dir", str(tmp_path / "store"), "--notify-config", str(cfg)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    stored = [json.loads(x) for x in (tmp_path / "store" / "alerts.log.jsonl").open()]
    critical = sorted(f"{a['id']}:{a['state']}:{a['step']}" for a in stored
                      if a["severity"] == "critical")
    assert critical and sorted(k for k, _ in hook.received) == critical


def test_a_batch_with_nothing_to_send_counts_as_delivered(tmp_path):
    """All silenced or unrouted: deliver says done (True), so `telltale notify` commits the
    batch and goes on instead of stopping as if asked to."""
    store = FileSilences(str(tmp_path / "silences.json"))
    store.add(new_silence("1h", run="r1"))
    cfg = NotifyConfig.from_dict({"handlers": {"c": {"type": "stdout"}},
                                  "routes": [{"to": "c", "match": {"metric": "loss"}}]})
    n = Notifier(cfg, silences=store.list)
    assert n.deliver([alert(run="r1")]) is True  # silenced
    assert n.deliver([alert(run="r2", metric="lr")]) is True  # no route
    assert n.counts["silenced"] == 1 and n.counts["unrouted"] == 1 and n.counts["delivered"] == 0
