"""Where a producer's batches go: Kafka (confluent-kafka or kafka-python) or an
in-process callable.

A transport's ``send(run, payload)`` delivers one encoded batch or raises; the
:class:`~telltale.producers.client.Monitor` keeps the batch and retries later.
:func:`kafka_transport` picks the Kafka client: confluent-kafka when it is installed
(``telltale[fast]``; librdkafka does the I/O in C threads that do not hold the GIL, so a
1 kHz training loop does not feel it), kafka-python otherwise (its I/O thread is Python
and takes ~10 % of a core at 1,000 events/s). ``TELLTALE_KAFKA_CLIENT=kafka-python``
forces the fallback.
"""

from __future__ import annotations

import logging
import os
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


# kafka-python option names that ConfluentTransport understands, and librdkafka's names
_LIBRDKAFKA_NAMES = {"security_protocol": "security.protocol"}
KAFKA_CLIENTS = ("auto", "confluent-kafka", "kafka-python")


def kafka_transport(bootstrap: str, topic: str, ack_timeout: float = 10.0, **kafka_options):
    """A Kafka transport: :class:`ConfluentTransport` when confluent-kafka is installed and
    the connection is PLAINTEXT (``TELLTALE_KAFKA_CLIENT`` unset or ``confluent-kafka``),
    else :class:`KafkaTransport` (kafka-python, which also explains refused credentials
    and certificates)."""
    client = os.environ.get("TELLTALE_KAFKA_CLIENT", "auto").strip() or "auto"
    if client not in KAFKA_CLIENTS:
        raise ValueError(f"TELLTALE_KAFKA_CLIENT={client!r} is not one of "
                         f"{', '.join(KAFKA_CLIENTS)}")
    plain = kafka_options.get("security_protocol", "PLAINTEXT") == "PLAINTEXT" and \
        set(kafka_options) <= set(_LIBRDKAFKA_NAMES)
    if client != "kafka-python" and plain:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            if client == "confluent-kafka":
                raise ValueError("TELLTALE_KAFKA_CLIENT=confluent-kafka but confluent-kafka "
                                 "is not installed: pip install 'telltale[fast]'") from None
        else:
            return ConfluentTransport(bootstrap, topic, ack_timeout)
    return KafkaTransport(bootstrap, topic, ack_timeout, **kafka_options)


class ConfluentTransport:
    """Sends each batch as one Kafka message keyed by run id through confluent-kafka and
    waits for the broker's ack (acks=all) with the GIL released.

    librdkafka gives a record up (``message.timeout.ms``) before our wait for its ack ends,
    so a failed send is not also delivered later; after a failure the producer is dropped
    (its queue purged) and a new one made for the next send.
    """

    def __init__(self, bootstrap: str, topic: str, ack_timeout: float = 10.0):
        self.bootstrap, self.topic, self.ack_timeout = bootstrap, topic, ack_timeout
        self.options = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                        "enable.idempotence": False,
                        "message.max.bytes": 4 * 1024 * 1024 + 1024,
                        "request.timeout.ms": int(ack_timeout * 1000),
                        "message.timeout.ms": int(ack_timeout * 1000) + 500,
                        "reconnect.backoff.max.ms": 2000,
                        "socket.connection.setup.timeout.ms": 5000,
                        "log_level": 3}
        self.wait_seconds = self.options["message.timeout.ms"] / 1000 + 1.0
        self.max_send_seconds = self.wait_seconds + 2.0
        self._producer = None
        self._client_error = None  # librdkafka's last error (e.g. connection refused)

    def __repr__(self) -> str:
        return f"ConfluentTransport({self.bootstrap!r}, {self.topic!r})"

    def send(self, run: str, payload: bytes) -> None:
        from confluent_kafka import KafkaException, Producer

        if self._producer is None:
            self._client_error = None
            self._producer = Producer({**self.options, "error_cb": self._on_error},
                                      logger=_DebugLog())
        producer, done = self._producer, []
        try:
            producer.produce(self.topic, payload, run.encode(),
                             on_delivery=lambda err, msg: done.append(err))
            producer.flush(self.wait_seconds)  # waits in C, without the GIL
        except (KafkaException, BufferError) as exc:
            self._abandon()
            raise TransportError(f"Kafka send to {self.topic} failed: {exc}") from None
        if not done or done[0] is not None:
            self._abandon()
            raise TransportError(self._explain(done[0] if done else None)) from None

    def _on_error(self, err) -> None:
        self._client_error = err

    def _explain(self, err) -> str:
        """Why the batch was not delivered, and what to check."""
        reason = err.str() if err is not None else f"no ack within {self.wait_seconds:g} s"
        seen = self._client_error
        if seen is not None and seen.name() in ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE"):
            return (f"Kafka at {self.bootstrap} is not reachable (no broker answers; "
                    f"{seen.str()}): check TELLTALE_KAFKA or start the broker")
        return f"Kafka send to {self.topic} at {self.bootstrap} failed: {reason}"

    def _abandon(self) -> None:
        """Drop the producer and purge whatever it still holds (the caller keeps the batch)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.purge()
                producer.flush(0)
            except Exception as exc:
                log.debug("confluent producer purge failed: %s", exc)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(5)
            except Exception as exc:  # closing must never raise into a trainer
                log.debug("confluent producer close failed: %s", exc)
            self._producer = None


class _DebugLog:
    """librdkafka's log lines at DEBUG: a failure is raised (and warned once by the
    Monitor), not repeated per reconnect attempt during an outage."""

    def log(self, level, msg, *args):
        log.debug("librdkafka: " + msg, *args)


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
