"""Where a producer's batches go: Kafka (kafka-python) or an in-process callable.

A transport's ``send(run, payload)`` delivers one encoded batch or raises; the
:class:`~telltale.producers.client.Monitor` keeps the batch and retries later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class TransportError(ConnectionError):
    """The batch was not delivered; it is kept and sent again later."""


class KafkaTransport:
    """Sends each batch as one Kafka message keyed by run id; waits for the broker's ack."""

    def __init__(self, bootstrap: str, topic: str, ack_timeout: float = 10.0, **kafka_options):
        self.bootstrap, self.topic, self.ack_timeout = bootstrap, topic, ack_timeout
        # a record is given up (expired) by kafka-python before our wait for its ack ends,
        # so a failed send is not also delivered later (no duplicates after an outage)
        self.options = {"acks": "all", "linger_ms": 0,
                        "max_request_size": 4 * 1024 * 1024,
                        "request_timeout_ms": int(ack_timeout * 1000),
                        "reconnect_backoff_max_ms": 2000, "max_block_ms": 5000,
                        "bootstrap_timeout_ms": 5000,
                        "delivery_timeout_ms": int(ack_timeout * 1000) + 500,
                        **kafka_options}
        self.max_send_seconds = (self.options["max_block_ms"]
                                 + self.options["delivery_timeout_ms"]) / 1000 + 2.0
        self._producer = None

    def __repr__(self) -> str:  # never shows credentials
        return (f"KafkaTransport({self.bootstrap!r}, {self.topic!r}, security_protocol="
                f"{self.options.get('security_protocol', 'PLAINTEXT')!r})")

    def _connect(self):
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        from telltale.access import KafkaLogCapture, explain_kafka_failure
        from telltale.config import Config

        with KafkaLogCapture() as seen:  # a wrong password says so, not "not reachable"
            try:
                self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, **self.options)
            except KafkaError as exc:
                o = self.options
                cfg = Config(kafka=self.bootstrap,
                             kafka_security_protocol=o.get("security_protocol", "PLAINTEXT"),
                             kafka_sasl_mechanism=o.get("sasl_mechanism"),
                             kafka_sasl_username=o.get("sasl_plain_username"))
                raise TransportError(explain_kafka_failure(cfg, "\n".join(seen.lines), exc)) \
                    from None
        return self._producer

    def send(self, run: str, payload: bytes) -> None:
        from kafka.errors import KafkaError

        producer = self._producer or self._connect()
        try:
            producer.send(self.topic, key=run.encode(), value=payload).get(
                self.options["delivery_timeout_ms"] / 1000 + 1.0)
        except KafkaError as exc:
            from kafka.errors import AuthorizationError

            # start afresh next time: a producer that lived through an outage can keep stale
            # metadata and idempotence sequence numbers, and stall its partitions for good
            self._abandon()
            if isinstance(exc, AuthorizationError):
                user = self.options.get("sasl_plain_username")
                raise TransportError(
                    f"Kafka user {user!r} may not write to {self.topic} "
                    f"({type(exc).__name__}): ask for Write and Describe ACLs on it, or set "
                    "TELLTALE_KAFKA_SASL_USERNAME to the producer principal") from None
            raise TransportError(f"Kafka send to {self.topic} failed: {exc}") from None

    def _abandon(self) -> None:
        """Drop the producer and whatever it still holds (the caller keeps the batch)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=0)
        except Exception:  # records still pending: stop its sender thread regardless
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                try:
                    sender.force_close()
                except Exception as exc:
                    log.debug("kafka producer force close failed: %s", exc)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as exc:  # closing must never raise into a trainer
                log.debug("kafka producer close failed: %s", exc)
            self._producer = None


class CallableTransport:
    """Hands batches to a function, e.g. the embedded pipeline's ``submit``."""

    def __init__(self, submit: Callable[[bytes, bytes], None]):
        self.submit = submit

    def send(self, run: str, payload: bytes) -> None:
        try:
            self.submit(run.encode(), payload)
        except Exception as exc:
            raise TransportError(f"embedded pipeline refused the batch: {exc}") from exc

    def close(self) -> None:
        pass
