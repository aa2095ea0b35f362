"""A producer transport that fails while switched off (a broker outage without a broker)."""

from __future__ import annotations

import threading

from telltale.schema import decode_message


class SwitchableTransport:
    """Fails while ``down`` is set; records what it delivered."""

    def __init__(self, down=False):
        self.down = threading.Event()
        if down:
            self.down.set()
        self.delivered = []
        self.failures = 0

    def send(self, run, payload):
        if self.down.is_set():
            self.failures += 1
            raise ConnectionError("broker unreachable")
        events, rejected = decode_message(payload)
        assert not rejected
        self.delivered += events

    def close(self):
        pass
