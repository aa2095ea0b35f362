"""The producer library used inside trainers and model servers."""

from telltale.producers.client import Monitor
from telltale.producers.transports import (
    CallableTransport,
    ConfluentTransport,
    KafkaTransport,
    TransportError,
    kafka_transport,
)

__all__ = ["Monitor", "KafkaTransport", "ConfluentTransport", "CallableTransport",
           "TransportError", "kafka_transport"]
