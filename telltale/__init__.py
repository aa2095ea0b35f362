"""Telltale: real-time anomaly detection for model training and inference.

    import telltale
    mon = telltale.init(run="exp-1")
    for i in range(steps):
        mon.log({"loss": loss, "acc": acc}, step=i)
    mon.close()
"""

from __future__ import annotations

__version__ = "0.1.0"


def init(run: str, tags: dict | None = None, broker: str | None = None, **options):
    """Start monitoring a run; returns a :class:`~telltale.producers.Monitor`.

    ``broker`` (or ``TELLTALE_KAFKA``) selects Kafka; without one the run goes through the
    embedded pipeline in this process, which prints alerts to stderr and keeps results in
    ``TELLTALE_STORE_DIR`` (default ``telltale-data``).
    """
    from telltale.config import Config
    from telltale.producers import CallableTransport, KafkaTransport, Monitor

    cfg = Config.from_env(kafka=broker)
    if cfg.kafka:
        transport = KafkaTransport(cfg.kafka, cfg.metrics_topic)
    else:
        from telltale.embedded import shared_pipeline

        transport = CallableTransport(shared_pipeline(cfg).submit)
    return Monitor(run, transport, tags=tags, **options)
