"""Kafka topics Telltale uses, created up front with the configured partition count."""

from __future__ import annotations

import logging

from telltale.access import AccessError
from telltale.config import Config
from telltale.sinks.kafka import create_topics

log = logging.getLogger(__name__)


def ensure_topics(cfg: Config, timeout: float = 30.0) -> None:
    """Create the metrics, alerts and dead-letter topics if they are missing."""
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    def denied(names: list[str]) -> AccessError:
        who = cfg.kafka_sasl_username or "this client"
        return AccessError(f"Kafka user {who!r} may not create the topics {', '.join(names)}: "
                           f"create them as an admin with {cfg.partitions} partitions, or grant "
                           "the user Create on them")

    wanted = [cfg.metrics_topic, cfg.alerts_topic, cfg.deadletter_topic]
    try:
        new = create_topics(cfg, [NewTopic(t, cfg.partitions, 1) for t in wanted], timeout,
                            denied=denied)
    except KafkaError as exc:
        raise ConnectionError(f"could not create Telltale's topics on {cfg.kafka}: {exc}") from None
    if new:
        log.info("created topics %s", new)
