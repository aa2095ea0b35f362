"""The producer library used inside trainers and model servers."""

from telltale.producers.client import Monitor
from telltale.producers.transports import CallableTransport, KafkaTransport, TransportError

__all__ = ["Monitor", "KafkaTransport", "CallableTransport", "TransportError"]
