"""Reading a Kafka topic in the background."""

from __future__ import annotations

import json
import threading
import time

from kafka import KafkaConsumer

from telltale.config import Config


class TopicReader:
    """Collects (arrival time, decoded record) from a topic in a background thread."""

    def __init__(self, cfg: Config, topic: str):
        self.records: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self.consumer = KafkaConsumer(topic, bootstrap_servers=cfg.kafka,
                                      auto_offset_reset="earliest", consumer_timeout_ms=200)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self._stop.is_set():
            for msg in self.consumer:
                self.records.append((time.time(), json.loads(msg.value)))

    def values(self) -> list[dict]:
        return [r for _, r in self.records]

    def close(self):
        self._stop.set()
        self.thread.join(5)
        self.consumer.close()
