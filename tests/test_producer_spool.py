"""The spool: batches that cannot be delivered go to disk and come back in order."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from telltale.producers import Monitor
from telltale.producers.spool import Spool
from telltale.schema import decode_message
from tests.support import ROOT
from tests.support.transports import SwitchableTransport


def test_spool_appends_reads_in_order_and_truncates_when_done(tmp_path):
    sp = Spool(str(tmp_path), "run/1 x", "0")
    assert not sp and sp.peek() is None
    for i in range(3):
        assert sp.append(b'{"b":%d}' % i, n_events=i + 1)
    seen = []
    while (item := sp.peek()) is not None:
        n, payload, size = item
        seen.append((n, payload))
        sp.advance(size)
    assert seen == [(1, b'{"b":0}'), (2, b'{"b":1}'), (3, b'{"b":2}')]
    assert not sp and os.path.getsize(sp.path) == 0
    sp.close()
    assert os.listdir(tmp_path) == []  # an empty spool leaves no file behind


def test_spool_is_bounded_and_counts_what_it_refuses(tmp_path):
    sp = Spool(str(tmp_path), "r", max_bytes=100)
    assert sp.append(b"x" * 60, 5)
    assert not sp.append(b"y" * 60, 7)
    assert sp.dropped_events == 7 and sp.spooled_events == 5
    sp.close()


def test_a_torn_last_line_is_skipped_and_counted(tmp_path):
    sp = Spool(str(tmp_path), "r")
    sp.append(b'{"ok":1}', 1)
    sp.close()
    with open(sp.path, "ab") as f:
        f.write(b'3 {"half')  # the trainer died mid-write
    sp2 = Spool(str(tmp_path), "r")
    n, payload, size = sp2.peek()
    assert payload == b'{"ok":1}'
    sp2.advance(size)
    assert sp2.peek() is None and sp2.corrupt_lines == 1
    sp2.close()


def test_outage_spills_to_disk_and_replays_in_order_before_newer_events(tmp_path):
    t = SwitchableTransport(down=True)
    sp = Spool(str(tmp_path), "r")
    mon = Monitor("r", t, spool=sp, max_queue=300, batch_size=50, linger=0.001,
                  retry_backoff=0.01, max_backoff=0.05)
    for i in range(2000):  # far more than the queue holds: the spool takes the rest
        mon.log({"loss": float(i)}, step=i, ts=1000.0 + i)
        if i % 100 == 0:
            import time

            time.sleep(0.01)
    assert not mon.flush(timeout=0.5)
    st = mon.stats()
    assert st["spooled"] > 0 and st["dropped"] == 0, st
    t.down.clear()
    for i in range(2000, 2100):
        mon.log({"loss": float(i)}, step=i, ts=1000.0 + i)
    assert mon.flush(timeout=20), mon.stats()
    mon.close()
    train = [e for e in t.delivered if e.kind == "train"]
    assert [e.step for e in train] == list(range(2100))
    assert [e.ts for e in train] == [1000.0 + i for i in range(2100)]  # original timestamps
    assert mon.stats()["replayed"] == mon.stats()["spooled"] > 0


def test_a_spool_left_by_a_dead_trainer_is_sent_by_the_next_monitor_of_the_run(tmp_path):
    down = SwitchableTransport(down=True)
    mon = Monitor("r", down, spool=Spool(str(tmp_path), "r", "3"), linger=0.001,
                  retry_backoff=0.01, tags={"rank": 3})
    for i in range(500):
        mon.log({"loss": float(i)}, step=i)
    mon.close(timeout=0.5)  # the broker never came back: everything is on disk
    assert mon.stats()["spooled"] == 501  # with the end marker
    t = SwitchableTransport()
    mon2 = Monitor("r", t, spool=Spool(str(tmp_path), "r", "3"), linger=0.001,
                   tags={"rank": 3})
    mon2.log({"loss": -1.0}, step=1000)
    mon2.close()
    steps = [(e.kind, e.step) for e in t.delivered]
    assert steps[:500] == [("train", i) for i in range(500)]
    assert steps[500:] == [("end", 499), ("train", 1000), ("end", 1000)]
    assert all(e.tags == {"rank": "3"} for e in t.delivered)


CHILD = """
import sys, time
from telltale.producers import ConfluentTransport, KafkaTransport, Monitor
from telltale.producers.signals import flush_on_sigterm
from telltale.producers.spool import Spool

if sys.argv[2] == "kafka-python":
    t = KafkaTransport("127.0.0.1:1", "telltale.metrics", max_block_ms=200,
                       bootstrap_timeout_ms=300, ack_timeout=0.5)
else:
    t = ConfluentTransport("127.0.0.1:1", "telltale.metrics", ack_timeout=0.5)
mon = Monitor("sig", t, spool=Spool(sys.argv[1], "sig"), linger=0.001, retry_backoff=0.05)
flush_on_sigterm(timeout=0.5)
for i in range(300):
    mon.log({"loss": float(i)}, step=i)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_sigterm_keeps_unsent_events_in_the_spool_and_still_terminates(tmp_path, client):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path),
                             client],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err.decode()
    assert b"kept in the spool" in err
    sp = Spool(str(tmp_path), "sig")
    steps = []
    while (item := sp.peek()) is not None:
        events, rejected = decode_message(item[1])
        steps += [(e.kind, e.step) for e in events]
        sp.advance(item[2])
    sp.close()
    assert steps == [("train", i) for i in range(300)] + [("end", 299)]
