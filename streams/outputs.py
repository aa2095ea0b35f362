"""Where a processor's output goes: alerts topic, dead-letter topic, InfluxDB point buffer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telltale.schema import Rejected, dumps
from telltale.sinks.buffer import DurablePointBuffer
from telltale.streams.checkpoint import Checkpointer
from telltale.streams.processor import Output

log = logging.getLogger("telltale.worker")


class Outputs:
    """Sends alerts and dead letters (the next checkpoint waits for them) and buffers points."""

    def __init__(self, alerts_topic: Any, deadletter_topic: Any, buffer: DurablePointBuffer,
                 ck: Checkpointer):
        self.alerts_topic, self.deadletter_topic = alerts_topic, deadletter_topic
        self.buffer, self.ck = buffer, ck

    async def dead_letter(self, key: bytes | None, rejected: Rejected) -> None:
        log.warning("dead-lettered input: %s", rejected.reason)
        self.ck.sends.append(await self.deadletter_topic.send(
            key=key, value=dumps(rejected.to_dict()).encode()))

    async def emit(self, run: str, key: bytes | None, out: Output) -> None:
        """An output's alerts to the alert topic, its refusals to the dead-letter topic,
        its points to the buffer."""
        rkey = run.encode()
        for a in out.alerts:
            self.ck.sends.append(await self.alerts_topic.send(key=rkey,
                                                              value=dumps(a).encode()))
        for r in out.rejected:
            await self.dead_letter(key or rkey, r)
        self.buffer.add(out.points, out.blocks)

    async def influx_refused(self, lines: list[str], message: str) -> None:
        """Points InfluxDB refused: to the dead-letter topic with its message, before the
        checkpoint that wrote the rest acknowledges their input."""
        reason = f"InfluxDB refused this point: {message}"
        futs = [await self.deadletter_topic.send(value=dumps(Rejected(reason, line).to_dict())
                                                 .encode()) for line in lines]
        await asyncio.gather(*futs)
