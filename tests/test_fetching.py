"""The worker's fetches never leave the input behind a long wait on quiet partitions
(streams/fetching.py), against the real broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from telltale.streams import fetching


async def _fetches(bootstrap: str, installed: bool) -> list[tuple[set, bool, int]]:
    """Drain a busy input partition slowly beside an idle one and a quiet topic; return
    each fetch sent: (partitions carried, every input partition carried?, its wait)."""
    name = f"fetch-{uuid.uuid4().hex[:8]}"
    inp, quiet = f"{name}-in", f"{name}-quiet"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(inp, 2, 1), NewTopic(quiet, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(3000):
            await producer.send(inp, b"x" * 200, partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    previous = fetching.install({inp}) if installed else None
    seen: list[tuple[set, bool, int]] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=1500,
                                max_partition_fetch_bytes=256 * 1024,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        await consumer.start()
        fetcher = consumer._fetcher
        inputs = {(inp, 0), (inp, 1)}
        original = fetcher._proc_fetch_request

        def record(assignment, node_id, request):
            carried = {(t, p[0]) for t, parts in request.topics for p in parts}
            seen.append((carried, inputs <= carried, request._max_wait_ms))
            return original(assignment, node_id, request)

        fetcher._proc_fetch_request = record
        consumer.assign([TopicPartition(inp, 0), TopicPartition(inp, 1),
                         TopicPartition(quiet, 0)])
        got = 0
        while got < 3000:  # a slow agent: buffered data outlives the prefetch backoff
            batch = await consumer.getmany(timeout_ms=2000, max_records=50)
            got += sum(len(v) for v in batch.values())
            await asyncio.sleep(0.03)
    finally:
        await consumer.stop()
        if installed:
            fetching.restore(previous)
    return seen


def test_a_fetch_that_leaves_input_out_waits_briefly(services):
    bootstrap = services["TELLTALE_KAFKA"]
    before = asyncio.run(_fetches(bootstrap, installed=False))
    partial = [wait for _, complete, wait in before if not complete]
    # the condition arises: fetches without the buffered input partition, waiting 1.5 s
    assert partial and max(partial) == 1500, before

    after = asyncio.run(_fetches(bootstrap, installed=True))
    partial = [wait for _, complete, wait in after if not complete]
    complete = [wait for _, done, wait in after if done]
    assert partial and max(partial) <= fetching.QUIET_WAIT_MS, after
    assert complete and set(complete) == {1500}, after  # all input carried: long poll kept
