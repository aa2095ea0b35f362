"""Producer options: privacy (tags, text), bad input, overflow policy, Kafka security."""

import logging
import threading
import time

import numpy as np
import pytest

from telltale.config import Config, ConfigError
from telltale.producers import KafkaTransport, Monitor
from telltale.producers.privacy import Privacy, hash_text, text_length
from tests.support.transports import SwitchableTransport


def test_tags_outside_the_allow_list_never_leave_the_process(tmp_path):
    t = SwitchableTransport()
    salt_file = tmp_path / "hash-salt"  # made on first use: a random salt per deployment
    mon = Monitor("r", t, tags={"rank": 1, "host": "n0", "email": "a@b.c"},
                  privacy=Privacy(hash_tags=("user",), salt_file=str(salt_file)))
    mon.log({"loss": 1.0}, step=1, tags={"user": "alice", "prompt": "secret text"})
    mon.close()
    ev = t.delivered[0]
    salt = salt_file.read_text().strip()
    assert ev.tags == {"rank": "1", "host": "n0", "user": hash_text("alice", salt)}
    assert hash_text("alice", salt) != hash_text("alice")
    assert mon.stats()["dropped_tags"] == ["email", "prompt"]
    assert "alice" not in repr(t.delivered) and "secret" not in repr(t.delivered)


def test_text_values_are_redacted_by_default_and_counted(caplog):
    t = SwitchableTransport()
    mon = Monitor("r", t)
    with caplog.at_level(logging.WARNING, logger="telltale"):
        mon.log({"loss": 0.5, "prompt": "my private prompt"}, step=1)
        mon.close()
    assert t.delivered[0].metrics == {"loss": 0.5}
    assert mon.stats()["redacted"] == 1 and "private" not in caplog.text
    assert "text metric values are not shipped" in caplog.text


def test_a_text_hook_can_turn_text_into_numbers():
    t = SwitchableTransport()
    mon = Monitor("r", t, privacy=Privacy(text=text_length))
    mon.log({"prompt": "hello"}, step=1, kind="infer")
    mon.close()
    assert t.delivered[0].metrics == {"prompt_chars": 5.0}


def test_bad_input_is_skipped_with_a_clear_warning_never_raised(caplog):
    t = SwitchableTransport()
    mon = Monitor("r", t)
    with caplog.at_level(logging.WARNING, logger="telltale"):
        mon.log(None, step=1)
        mon.log({"loss": 1.0}, step=2, kind="bogus")
        mon.log({"loss": 1.0}, step="three")
        mon.log({"loss": 2.0}, step=np.int64(4))
        mon.log({"loss": 3.0})  # continues from the last good step
        mon.log({"loss": object(), "acc": np.float32(0.25), "ok": True, "n": np.int64(3)},
                step=3)  # one bad value out of four
        mon.close()
    assert [e.step for e in t.delivered if e.kind == "train"] == [4, 5, 3]
    assert t.delivered[2].metrics == {"acc": 0.25, "ok": 1.0, "n": 3.0}
    assert mon.stats()["invalid"] == 4
    assert "log() needs a dict of metrics" in caplog.text and "kind must be one of" in caplog.text


def test_many_metrics_are_split_into_events_of_the_same_step():
    t = SwitchableTransport()
    mon = Monitor("r", t)
    mon.log({f"m{i}": float(i) for i in range(600)}, step=7)
    mon.close()
    train = [e for e in t.delivered if e.kind == "train"]
    assert len(train) == 3 and {e.step for e in train} == {7}
    assert sum(len(e.metrics) for e in train) == 600


def test_drop_newest_policy_keeps_the_oldest_and_counts():
    t = SwitchableTransport(down=True)
    mon = Monitor("r", t, max_queue=10, batch_size=1000, linger=60, overflow="drop_newest")
    for i in range(25):
        mon.log({"x": float(i)}, step=i)
    assert mon.stats()["dropped"] == 15
    t.down.clear()
    mon.close()
    assert [e.step for e in t.delivered if e.kind == "train"] == list(range(10))
    with pytest.raises(ValueError, match="overflow must be one of"):
        Monitor("r", t, overflow="block")


def test_kafka_security_settings_pass_through_and_secrets_stay_out_of_repr(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"TELLTALE_KAFKA": "k:9093", "TELLTALE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
           "TELLTALE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "TELLTALE_KAFKA_SASL_USERNAME": "trainer",
           "TELLTALE_KAFKA_SASL_PASSWORD_FILE": str(pw), "TELLTALE_KAFKA_SSL_CAFILE": str(ca)}
    cfg = Config.from_env(env)
    opts = cfg.kafka_options()
    assert opts == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_plain_username": "trainer", "sasl_plain_password": "hunter2",
                    "ssl_cafile": str(ca)}
    direct = Config.from_env({**env, "TELLTALE_KAFKA_SASL_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(direct) and direct.kafka_options()["sasl_plain_password"] == \
        "s3cret"
    tr = KafkaTransport(cfg.kafka, cfg.metrics_topic, **opts)
    assert "hunter2" not in repr(tr) and "SASL_SSL" in repr(tr)
    assert Config.from_env({}).kafka_options() == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("env, message", [
    ({"TELLTALE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "is not one of"),
    ({"TELLTALE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs TELLTALE_KAFKA_SASL_MECHANISM"),
    ({"TELLTALE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "TELLTALE_KAFKA_SASL_MECHANISM": "PLAIN"}, "needs TELLTALE_KAFKA_SASL_USERNAME"),
    ({"TELLTALE_KAFKA_SASL_MECHANISM": "PLAIN"}, "security protocol is PLAINTEXT"),
    ({"TELLTALE_KAFKA_SECURITY_PROTOCOL": "SSL", "TELLTALE_KAFKA_SSL_CAFILE": "/nope.pem"},
     "does not exist"),
])
def test_inconsistent_security_settings_say_what_to_set(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env).kafka_options()


def test_init_from_env_with_embedded_pipeline(tmp_path, monkeypatch):
    import telltale

    monkeypatch.delenv("TELLTALE_KAFKA", raising=False)
    monkeypatch.setenv("TELLTALE_RUN", "env-run")
    monkeypatch.setenv("TELLTALE_STORE_DIR", str(tmp_path))
    with telltale.init(tags={"model": "m", "secret": "x"}, handle_sigterm=False) as mon:
        assert mon.run == "env-run" and mon.tags == {"model": "m"} and mon.spool is None
        telltale.log({"loss": 1.0}, step=1)
        assert mon.flush(10)
    assert mon.stats()["sent"] == 2
    with pytest.raises(ValueError, match="TELLTALE_RUN"):
        monkeypatch.delenv("TELLTALE_RUN")
        telltale.init()


def test_init_starts_system_metrics_and_watch_uses_the_current_monitor(tmp_path, monkeypatch):
    import torch

    import telltale

    monkeypatch.delenv("TELLTALE_KAFKA", raising=False)
    monkeypatch.setenv("TELLTALE_STORE_DIR", str(tmp_path))
    mon = telltale.init("init-run", system=0.02, handle_sigterm=False)
    model = torch.nn.Linear(3, 1)
    w = telltale.watch(model, every=1)
    assert w.monitor is mon and w in mon._extras
    model(torch.randn(2, 3)).sum().backward()
    time.sleep(0.2)
    telltale.close()
    assert mon.stats()["sent"] >= 3  # system samples, the watched step, the end marker
    assert not model._forward_pre_hooks  # close() took the hooks off


def test_the_senders_fast_path_keeps_every_check():
    """Names already let through take the sender's fast path; their values are still
    checked every time, and refused names are refused every time."""
    t = SwitchableTransport()
    mon = Monitor("r", t, tags={"rank": 0}, privacy=Privacy(metric_names=["loss", "acc"]))
    for step in (1, 2, 3):
        mon.log({"loss": 1.0, "acc": 2, "secret_name": 3.0}, step=step)
    mon.log({"loss": "some text"}, step=4)  # a known name with a text value
    mon.log({"loss": True, "acc": np.float32(0.25)}, step=5)
    mon.log({"loss": float("nan"), "acc": 1.0}, step=6, tags={"rank": 3})
    mon.log({"loss": 1.0}, step=7, ts=float("inf"))
    mon.close()
    train = [e for e in t.delivered if e.kind == "train"]
    assert [e.step for e in train] == [1, 2, 3, 5, 6]
    assert [e.metrics for e in train[:3]] == [{"loss": 1.0, "acc": 2.0}] * 3
    assert train[3].metrics == {"loss": 1.0, "acc": 0.25}
    assert np.isnan(train[4].metrics["loss"]) and train[4].tags == {"rank": "3"}
    assert train[0].tags == {"rank": "0"}
    st = mon.stats()
    assert st["dropped_metrics"] == 3 and st["redacted"] == 1 and st["invalid"] == 1


def test_deferred_events_are_built_on_the_sender_thread_and_never_crash_it(caplog):
    from telltale.producers.client import deferred

    t = SwitchableTransport()
    mon = Monitor("r", t)
    threads = []

    @deferred
    def build(x):
        threads.append(threading.current_thread().name)
        return {"x": x}

    @deferred
    def broken():
        raise ValueError("bug in a builder")

    called = []

    def not_registered(*args):
        called.append(args)
        return {"y": 1.0}

    with caplog.at_level(logging.WARNING, logger="telltale"):
        mon.log_deferred(build, (1.5,), kind="infer")
        mon.log_deferred(broken, (), kind="infer")
        mon.log((not_registered, (2.0,)), step=10)  # a tuple from a caller is not called
        mon.log_deferred(build, (2.5,), kind="infer")
        mon.close()
    assert [(e.step, e.metrics) for e in t.delivered if e.kind == "infer"] == \
        [(1, {"x": 1.5}), (11, {"x": 2.5})]
    assert threads == ["telltale-sender-r"] * 2 and not called
    assert mon.stats()["invalid"] == 2 and "bug in a builder" in caplog.text


def test_a_tuple_of_anything_from_a_caller_is_an_invalid_event_not_a_sender_error():
    t = SwitchableTransport()
    mon = Monitor("r", t)
    mon.log(([1], (2,)), step=1)  # unhashable first item: never looked up as a builder
    mon.log({"loss": 1.0}, step=2)
    mon.close()
    assert [e.step for e in t.delivered if e.kind == "train"] == [2]
    assert mon.stats()["invalid"] == 1 and mon.stats()["send_failures"] == 0
