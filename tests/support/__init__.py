"""Helpers shared by the tests and the benches (``bench/`` imports them too).

- ``services``: the real Kafka and InfluxDB from scripts/services.sh, a config of one's own
- ``workers``: ``telltale worker`` subprocesses
- ``influx``: InfluxQL queries and counts against the real InfluxDB
- ``kafka``: reading a topic in the background
- ``transports``: a producer transport that can be switched off
- ``servers``: a webhook receiver and an SMTP server
- ``detectors``: running a detector in batches
- ``browser``: driving the headless Chromium

Test modules import these, never ``conftest`` or each other.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def unique(prefix: str) -> str:
    """``prefix`` with a random suffix: names no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(pred, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):
    """``pred()``'s first truthy value, polled every ``interval`` s; AssertionError after
    ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
