"""Kafka topics Telltale uses, created up front with the configured partition count."""

from __future__ import annotations

import logging

from telltale.config import Config

log = logging.getLogger(__name__)


def ensure_topics(cfg: Config, timeout: float = 30.0) -> None:
    """Create the metrics, alerts and dead-letter topics if they are missing."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(bootstrap_servers=cfg.kafka, client_id="telltale-admin",
                                 request_timeout_ms=int(timeout * 1000))
    except KafkaError:
        raise ConnectionError(f"no Kafka broker answers at {cfg.kafka}; check TELLTALE_KAFKA "
                              "or start one (scripts/services.sh start)") from None
    try:
        existing = set(admin.list_topics())
        wanted = [cfg.metrics_topic, cfg.alerts_topic, cfg.deadletter_topic]
        new = [NewTopic(t, cfg.partitions, 1) for t in wanted if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", [t.name for t in new])
    except KafkaError as exc:
        raise ConnectionError(f"could not create Telltale's topics on {cfg.kafka}: {exc}") from None
    finally:
        admin.close()
