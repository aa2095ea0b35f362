"""Kafka clients that outlive their broker, and topic creation.

- :func:`create_topics`: creates the topics that are missing (Telltale's own topics, the
  silences topic); a race with another client creating them is fine;
- :func:`reconnect` and :func:`close_quietly`: what a long-running consumer (``telltale
  alerts``, ``telltale notify``) does when the broker goes away: close the old client, make
  a new one every second until a broker answers (the consumer group resumes from its
  committed offsets);
- :func:`broker_listening`: whether anything accepts a connection at the bootstrap
  addresses (a quiet consumer cannot tell a quiet topic from a broker that is gone).

Credentials and the explanation of a refused connection come from :mod:`telltale.access`.
kafka-python is imported when used: importing this module costs nothing.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from telltale.access import kafka_admin
from telltale.config import Config

Client = TypeVar("Client")

RECONNECT_EVERY = 1.0  # seconds between attempts to reach a broker that went away


def create_topics(cfg: Config, topics: Sequence[Any], timeout: float = 10.0,
                  denied: Callable[[list[str]], Exception] | None = None) -> list[str]:
    """Create those of ``topics`` (kafka-python ``NewTopic``) that do not exist; returns
    the names created. A user who may not create them: ``denied(names)`` is raised when
    given, else kafka-python's AuthorizationError. Other Kafka errors raise as
    kafka-python raises them; :class:`~telltale.access.AccessError` when the broker does
    not let us in at all."""
    from kafka.errors import AuthorizationError, TopicAlreadyExistsError

    admin = kafka_admin(cfg, timeout)
    try:
        existing = set(admin.list_topics())
        new = [t for t in topics if t.name not in existing]
        if new:
            try:
                admin.create_topics(list(new))
            except TopicAlreadyExistsError:
                pass
            except AuthorizationError:
                if denied is None:
                    raise
                raise denied([t.name for t in new]) from None
        return [t.name for t in new]
    finally:
        admin.close()


def close_quietly(client: Any, **kwargs: Any) -> None:
    """Close a Kafka client whose broker may be gone (closing it then may raise)."""
    try:
        client.close(**kwargs)
    except Exception:  # nothing left to keep: the client is dropped either way
        pass


def reconnect(connect: Callable[[], Client], wait: Callable[[float], bool] | None = None,
              give_up: float = float("inf")) -> Client | None:
    """Call ``connect`` every :data:`RECONNECT_EVERY` s until it returns a client (a
    KafkaError means "no broker yet"). None when ``wait`` (e.g. ``threading.Event.wait``)
    returns True, i.e. the caller is stopping, or once ``time.monotonic()`` passes
    ``give_up``."""
    from kafka.errors import KafkaError

    while time.monotonic() < give_up:
        if wait is not None:
            if wait(RECONNECT_EVERY):
                return None
        else:
            time.sleep(RECONNECT_EVERY)
        try:
            return connect()
        except KafkaError:
            continue
    return None


def broker_listening(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when some bootstrap address accepts a TCP connection (a killed broker does not;
    a consumer itself may not notice before its idle timeout ends)."""
    for addr in bootstrap.split(","):
        host, _, port = addr.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)),
                                          timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False
