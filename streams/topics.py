"""Kafka topics Telltale uses, created up front with the configured partition count."""

from __future__ import annotations

import logging

from telltale.config import Config

log = logging.getLogger(__name__)


def ensure_topics(cfg: Config, timeout: float = 30.0) -> None:
    """Create the metrics, alerts and dead-letter topics if they are missing."""
    from kafka.admin import NewTopic
    from kafka.errors import AuthorizationError, KafkaError, TopicAlreadyExistsError

    from telltale.access import AccessError, kafka_admin

    admin = kafka_admin(cfg, timeout)
    try:
        existing = set(admin.list_topics())
        wanted = [cfg.metrics_topic, cfg.alerts_topic, cfg.deadletter_topic]
        new = [NewTopic(t, cfg.partitions, 1) for t in wanted if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            except AuthorizationError:
                who = cfg.kafka_sasl_username or "this client"
                raise AccessError(
                    f"Kafka user {who!r} may not create the topics "
                    f"{', '.join(t.name for t in new)}: create them as an admin with "
                    f"{cfg.partitions} partitions, or grant the user Create on them") from None
            log.info("created topics %s", [t.name for t in new])
    except KafkaError as exc:
        raise ConnectionError(f"could not create Telltale's topics on {cfg.kafka}: {exc}") from None
    finally:
        admin.close()
