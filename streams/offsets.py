"""Partition offsets: which message each partition of the metrics topic should give next.

In a rebalance, messages already fetched can be dropped from the consumer's buffers and
never reach the agent. The worker notices from the offsets: a later message shows the gap,
or, for a partition's last messages, its log ends past what was processed while nothing
arrives. Then the consumer is paused and those partitions read again from the first offset
not processed.

This is the only module that uses Faust's or aiokafka's private APIs. Each use is marked
"private API", checked against faust-streaming 0.15.3 and aiokafka 0.14.0 (the consumer
methods below run in Faust's aiokafka consumer thread).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import cast

import faust
from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer
from faust.types import TP, Message

log = logging.getLogger("telltale.worker")


class PartitionOffsets:
    """The next offset to process per partition of ``topic``, and the re-reads of gaps."""

    def __init__(self, app: faust.App, topic: str):
        self.app, self.topic = app, topic
        self.expected: dict[int, int] = {}  # partition -> next offset to process
        self.progress: dict[int, float] = {}  # partition -> when it last moved
        self.rewind = False  # read again from the expected offsets (see `tail_check`)
        self.counts = {"refetches": 0}

    @property
    def consumer(self) -> Consumer:
        # the concrete consumer (not ConsumerT): its private members are used below
        return cast(Consumer, self.app.consumer)

    def assigned(self) -> list[int]:
        """The partitions of ``topic`` assigned to this worker, sorted."""
        return sorted(tp.partition for tp in self.app.consumer.assignment()
                      if tp.topic == self.topic)

    def of_topic(self, tps: Iterable[TP]) -> set[int]:
        """The partitions of ``topic`` among ``tps``."""
        return {tp.partition for tp in tps if tp.topic == self.topic}

    async def admit(self, msg: Message) -> bool | None:
        """A message reached the agent: True if it is the next to process, False if it was
        processed before (acked with the batch, not processed again), None if messages
        before it are missing (skip it; `tail_check` reads again from the gap)."""
        exp = self.expected.get(msg.partition)
        if exp is None:  # first message since the assignment
            exp = self.expected[msg.partition] = await self.start_offset(msg.tp)
        if msg.offset > exp:
            # a message before this one never reached the agent (dropped from the
            # fetch buffers in a rebalance): read again from it; ack nothing past it
            if not self.rewind:
                log.warning("partition %d: got offset %d, expected %d; reading "
                            "again from the committed offset", msg.partition,
                            msg.offset, exp)
            self.rewind = True  # done by `tail_check`, outside the agent
            return None
        if msg.offset == exp:
            self.expected[msg.partition] = msg.offset + 1
            self.progress[msg.partition] = time.monotonic()
            return True
        return False

    async def start_offset(self, tp: TP) -> int:
        """Where a newly assigned partition starts: its committed offset (Faust seeks
        there when the recovery ends), else the start of its log (auto_offset_reset is
        earliest). Messages the fetcher skipped in a rebalance show up as a gap."""
        # private API: Consumer._committed_offset, the offsets Faust committed or read
        # at the assignment (faust-streaming 0.15.3: faust/transport/consumer.py)
        committed = self.consumer._committed_offset.get(tp)
        if committed is not None:
            return committed
        return (await self.consumer.earliest_offsets(tp)).get(tp) or 0

    def forget(self, partitions: set[int]) -> None:
        """Partitions went to another worker."""
        for p in partitions:
            self.expected.pop(p, None)

    async def tail_check(self, lock: asyncio.Lock) -> None:
        """Find partitions whose log goes on past what was processed while none of their
        messages arrive, and read every gap again (``lock``: the agent's). Never during
        table recovery: the consumer belongs to it then, and Faust seeks every partition
        to its committed offset when it ends."""
        consumer = self.consumer
        # private API: TableManager.recovery (ConsumerT's app.tables has no `recovery`)
        # and its `completed` event (faust-streaming 0.15.3: faust/tables/recovery.py)
        recovery = cast(TableManager, self.app.tables).recovery
        if self.app.in_recovery or not recovery.completed.is_set():
            self.rewind = False
            return
        now = time.monotonic()
        # private API: Consumer._get_active_partitions(), the assigned partitions not
        # paused (faust-streaming 0.15.3: faust/transport/consumer.py)
        active = consumer._get_active_partitions()
        for tp in consumer.assignment():
            if tp.topic != self.topic or tp not in active:
                continue
            if tp.partition not in self.expected:  # nothing arrived since the assignment:
                async with lock:  # perhaps its fetched messages were all dropped
                    if tp.partition not in self.expected:
                        self.expected[tp.partition] = await self.start_offset(tp)
                        self.progress[tp.partition] = now
            exp = self.expected.get(tp.partition)
            hw = consumer.highwater(tp)
            # stalled: its log goes on, yet none of its messages reached the agent for 3 s
            # while the worker was idle (a busy worker may serve a partition late), or 30 s
            stale = now - self.progress.get(tp.partition, 0.0)
            idle = now - max(self.progress.values(), default=0.0)
            if exp is not None and hw is not None and hw > exp \
                    and (stale > 30.0 or (stale > 3.0 and idle > 3.0)):
                log.warning("partition %d: log ends at %d, processed up to %d; reading "
                            "again from there", tp.partition, hw, exp)
                self.progress[tp.partition] = now
                self.rewind = True
        if self.rewind:
            await self._read_again()

    async def _read_again(self) -> None:
        """Pause the consumer and seek each partition to its expected offset."""
        consumer = self.consumer
        self.counts["refetches"] += 1
        consumer.stop_flow()
        try:
            # wait_for_stopped_flow: on Faust's Consumer, not on ConsumerT; seek_wait calls
            # AIOKafkaConsumer.seek in the consumer's thread, so it does not race with the
            # fetcher (faust-streaming 0.15.3: faust/transport/drivers/aiokafka.py;
            # aiokafka 0.14.0)
            await asyncio.wait_for(consumer.wait_for_stopped_flow(), 10.0)
            to = {tp: self.expected[tp.partition] for tp in consumer.assignment()
                  if tp.topic == self.topic and tp.partition in self.expected}
            await consumer.seek_wait(to)
        except Exception:  # next time; the data stays in Kafka
            log.exception("could not read the partitions again")
        finally:
            self.rewind = False
            consumer.resume_flow()
