"""DATA_DIR/worker-status.json: what a worker holds and has done, for `doctor`, ops and tests."""

from __future__ import annotations

import json
import os
from typing import Any

from telltale.sinks.buffer import DurablePointBuffer
from telltale.streams.batches import BatchHandler
from telltale.streams.checkpoint import Checkpointer
from telltale.streams.expiry import RunExpiry
from telltale.streams.offsets import PartitionOffsets


class WorkerStatus:
    """Writes the status file: assigned partitions, runs seen, counters, InfluxDB buffer."""

    def __init__(self, data_dir: str, table: Any, buffer: DurablePointBuffer,
                 ck: Checkpointer, batches: BatchHandler, offsets: PartitionOffsets,
                 expiry: RunExpiry):
        self.path = os.path.join(data_dir, "worker-status.json")
        self.table, self.buffer, self.ck = table, buffer, ck
        self.batches, self.offsets, self.expiry = batches, offsets, expiry

    def doc(self) -> dict:
        ck, batches = self.ck, self.batches
        return {"pid": os.getpid(), "assigned": self.offsets.assigned(), "runs": batches.runs,
                "cached_runs": len(ck.cache), "table_runs": len(self.table) - ck.markers,
                **ck.counts, **batches.counts, **self.offsets.counts, **self.expiry.counts,
                "input_age_mean_s": batches.age_sum / max(1, batches.counts["messages"]),
                "influx": {**self.buffer.status(),
                           "pending": len(self.buffer) + ck.committing}}

    def write(self) -> None:
        """Replace the file atomically (readers never see half of it)."""
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.doc(), f)
        os.replace(self.path + ".tmp", self.path)
