"""Fetches that never hold the input topic back behind quiet partitions.

aiokafka sends one fetch per broker at a time, and none for a partition whose fetched data
is still buffered. Faust lets every fetch wait up to 1.5 s at the broker for data
(``fetch_max_wait_ms=1500``, faust-streaming 0.15.3). So while the input's partitions are
buffered, the next fetch carries only the partitions that were not (the changelog, the
assignor's, an input partition no run writes to) and the broker keeps it until one of
*those* gets data or 1.5 s pass; the input's next data waits for it. Here a fetch that
leaves out any of the worker's input partitions waits at most ``quiet_wait_ms``; one that
carries all of them keeps the long wait (new input data answers it at once).

Checked against aiokafka 0.14.0: ``Fetcher._get_actions_per_node`` returns
``(fetch_requests, ...)`` with ``fetch_requests`` a list of ``(node_id, FetchRequest)``,
and ``FetchRequest`` keeps its wait in ``_max_wait_ms`` and its partitions in ``topics``
(``[(topic, [(partition, offset, max_bytes), ...]), ...]``).
"""

from __future__ import annotations

from aiokafka.consumer import consumer as _consumer_module
from aiokafka.consumer.fetcher import Fetcher

QUIET_WAIT_MS = 100


class InputFirstFetcher(Fetcher):
    """A Fetcher whose fetches wait long only when they carry every input partition."""

    input_topics: frozenset[str] = frozenset()
    quiet_wait_ms: int = QUIET_WAIT_MS

    def _get_actions_per_node(self, assignment):
        actions = super()._get_actions_per_node(assignment)
        if not self.input_topics:
            return actions
        inputs = {(tp.topic, tp.partition) for tp in assignment.tps
                  if tp.topic in self.input_topics}
        for _node, request in actions[0]:
            carried = {(topic, p[0]) for topic, parts in request.topics for p in parts}
            if not inputs <= carried:
                request._max_wait_ms = min(request._max_wait_ms, self.quiet_wait_ms)
        return actions


def install(input_topics: set[str] | frozenset[str], quiet_wait_ms: int = QUIET_WAIT_MS):
    """Make aiokafka consumers started after this call in this process fetch input first.

    Call it in the worker before Faust starts its consumer. Returns the Fetcher class
    that was in place (``restore()`` puts it back)."""
    previous = _consumer_module.Fetcher
    InputFirstFetcher.input_topics = frozenset(input_topics)
    InputFirstFetcher.quiet_wait_ms = int(quiet_wait_ms)
    _consumer_module.Fetcher = InputFirstFetcher
    return previous


def restore(previous=Fetcher) -> None:
    """Put aiokafka's own Fetcher (or ``previous``) back."""
    _consumer_module.Fetcher = previous
