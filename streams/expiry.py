"""Run expiry: runs that went quiet are ended, ended runs' markers leave the table.

An ended run's marker only needs to outlive the commit of its last offsets (MARKER_TTL_S).
A run of this worker without events for ``run_idle_ttl`` (a trainer that died without its
``end``) is ended like one that sent it: windows closed, open incidents resolved, state
released.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from telltale.streams.checkpoint import Checkpointer, is_marker
from telltale.streams.outputs import Outputs
from telltale.streams.processor import RunProcessor

log = logging.getLogger("telltale.worker")

MARKER_TTL_S = 600.0  # how long an ended run's marker stays in the table


class RunExpiry:
    """Ends this worker's idle runs and drops old markers from the run-state table."""

    def __init__(self, table: Any, partitions: int, idle_ttl: float, processor: RunProcessor,
                 ck: Checkpointer, outputs: Outputs, assigned: Callable[[], list[int]]):
        self.table, self.idle_ttl, self.processor = table, idle_ttl, processor
        self.ck, self.outputs, self.assigned = ck, outputs, assigned
        self.partitioner = DefaultPartitioner()  # the producers': run key -> partition
        self.all_parts = list(range(partitions))
        self.counts = {"expired_runs": 0}

    async def expire(self) -> None:
        """One pass over the table: drop old markers, end the idle runs."""
        ck = self.ck
        now = time.time()
        old = now - MARKER_TTL_S
        markers = 0
        mine = set(self.assigned())
        idle = []
        for k, v in list(self.table.items()):
            if is_marker(v):
                if json.loads(v).get("ended_at", 0) < old:
                    self.table.pop(k, None)
                else:
                    markers += 1
                continue
            run = k.decode()
            part = self.partitioner(k, self.all_parts, self.all_parts)
            if part not in mine:
                continue
            if run not in ck.last_seen:  # once per run after a start or an assignment
                ck.last_seen[run] = json.loads(v).get("seen_at", now) if v else now
            if now - ck.last_seen[run] > self.idle_ttl:
                idle.append((run, part))
        ck.markers = markers
        for run, part in idle:
            async with ck.lock:
                ent = ck.state_for(run, part, self.processor.new_state)
                if ent["state"].get("ended"):
                    continue
                hours = self.idle_ttl / 3600
                out = self.processor.end(ent["state"], f"no events for {hours:g} h")
                ck.changed(ent)
                ck.force = True
                self.counts["expired_runs"] += 1
                log.warning("run %r sent no events for %g h: ended", run, hours)
                await self.outputs.emit(run, None, out)
