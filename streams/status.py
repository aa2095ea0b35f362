"""DATA_DIR/worker-status.json: what a worker holds and has done, for `doctor`, ops and tests."""

from __future__ import annotations

import gc
import json
import os
import time
from typing import Any

from telltale.sinks.buffer import DurablePointBuffer
from telltale.streams.batches import BatchHandler
from telltale.streams.checkpoint import Checkpointer
from telltale.streams.expiry import RunExpiry
from telltale.streams.offsets import PartitionOffsets


class GcPauses:
    """Counts the garbage collector's collections and pauses per generation (the event
    loop stops for each): a long tail in alert latency can be the collector's."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.pause_s = [0.0, 0.0, 0.0]
        self.pause_max_s = [0.0, 0.0, 0.0]
        self._t0 = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        g = info.get("generation", 0)
        took = time.perf_counter() - self._t0
        self.count[g] += 1
        self.pause_s[g] += took
        self.pause_max_s[g] = max(self.pause_max_s[g], took)

    def close(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def doc(self) -> dict:
        return {"collections": self.count, "pause_s": [round(x, 6) for x in self.pause_s],
                "pause_max_s": [round(x, 6) for x in self.pause_max_s]}


class WorkerStatus:
    """Writes the status file: assigned partitions, runs seen, counters, InfluxDB buffer."""

    def __init__(self, data_dir: str, table: Any, buffer: DurablePointBuffer,
                 ck: Checkpointer, batches: BatchHandler, offsets: PartitionOffsets,
                 expiry: RunExpiry):
        self.path = os.path.join(data_dir, "worker-status.json")
        self.table, self.buffer, self.ck = table, buffer, ck
        self.batches, self.offsets, self.expiry = batches, offsets, expiry
        self.gc = GcPauses()

    def doc(self) -> dict:
        ck, batches = self.ck, self.batches
        return {"pid": os.getpid(), "assigned": self.offsets.assigned(), "runs": batches.runs,
                "cached_runs": len(ck.cache), "table_runs": len(self.table) - ck.markers,
                **ck.counts, **batches.counts, **self.offsets.counts, **self.expiry.counts,
                "input_age_mean_s": batches.age_sum / max(1, batches.taken),
                "producer_hold_mean_s": batches.hold_sum / max(1, batches.holds),
                "gc": self.gc.doc(),
                "influx": {**self.buffer.status(),
                           "pending": len(self.buffer) + ck.committing}}

    def write(self) -> None:
        """Replace the file atomically (readers never see half of it)."""
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.doc(), f)
        os.replace(self.path + ".tmp", self.path)
