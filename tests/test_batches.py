"""The agent's message batches: how long their first message waits before processing."""

from __future__ import annotations

import time
from types import SimpleNamespace

from telltale.streams.batches import PENDING_WAIT, MessageBatch


def _event(value: bytes = b"{}"):
    return SimpleNamespace(value=value, message=SimpleNamespace(partition=0))


def test_a_fresh_message_waits_for_more():
    batch = MessageBatch()
    batch.add(_event(), True, age=0.002)
    assert not batch.waited(PENDING_WAIT)
    time.sleep(PENDING_WAIT)
    assert batch.waited(PENDING_WAIT)


def test_a_message_that_waited_in_kafka_does_not_wait_again():
    """Messages that arrived while the worker was busy processing are processed as soon as
    the agent has taken what is there, not PENDING_WAIT later."""
    batch = MessageBatch()
    batch.add(_event(), True, age=PENDING_WAIT * 1.5)
    assert batch.waited(PENDING_WAIT)
    later = MessageBatch()
    later.add(_event(), True, age=PENDING_WAIT / 2)  # half the wait is already behind it
    assert not later.waited(PENDING_WAIT)
    time.sleep(PENDING_WAIT / 2 + 0.01)
    assert later.waited(PENDING_WAIT)


def test_a_producer_clock_ahead_of_the_worker_changes_nothing():
    batch = MessageBatch()
    batch.add(_event(), True, age=-30.0)  # its timestamp is in the worker's future
    assert not batch.waited(PENDING_WAIT)
    assert batch.since <= time.monotonic()


def test_the_status_counts_garbage_collections_and_their_pauses():
    import gc

    from telltale.streams.status import GcPauses

    pauses = GcPauses()
    try:
        before = pauses.doc()["collections"][2]
        gc.collect(2)
        doc = pauses.doc()
        assert doc["collections"][2] == before + 1
        assert doc["pause_s"][2] >= doc["pause_max_s"][2] > 0.0
    finally:
        pauses.close()
    gc.collect(2)
    assert pauses.doc()["collections"][2] == before + 1  # closed: no longer counting
