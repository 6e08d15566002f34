"""The output-topic watch: the predictions and dead-letter topics keep existing, with the request topic's
partition count, for as long as the worker writes to them.

Found from outside: the embedded broker acknowledges writes to a deleted topic and to partitions a shrunk
topic no longer has, so a worker could go on "delivering" into nothing, commit the offsets and stay ready.
Every ``interval_s`` this service reads the cluster metadata; a missing or resized topic is a
``TopicsChanged`` error handed to ``on_change`` (the worker says so and exits non-zero). A metadata request that
fails (broker away) is logged and retried: unreachability is not a change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from streamer.core.errors import BrokerError, TopicsChanged
from streamer.services.runner import Background, Service

log = logging.getLogger(__name__)


def topic_changes(counts: dict[str, int], topics: Sequence[str], partitions: int) -> list[str]:
    """What is wrong with ``topics`` given their partition ``counts`` (absent: deleted); [] when all is well."""
    problems = []
    for topic in topics:
        if topic not in counts:
            problems.append(f"{topic} no longer exists")
        elif counts[topic] != partitions:
            problems.append(f"{topic} has {counts[topic]} partitions instead of {partitions}")
    return problems


class TopicWatch(Background):
    def __init__(
        self,
        partition_counts: Callable[[Sequence[str]], dict[str, int]],
        topics: Sequence[str],
        partitions: int,
        on_change: Callable[[TopicsChanged], None],
        interval_s: float = 10.0,
    ) -> None:
        self._counts, self._topics, self._partitions, self._on_change = partition_counts, topics, partitions, on_change
        self._reported = False
        self.service = Service("topic-watch", self.check, interval_s=interval_s)

    def check(self) -> bool:
        try:
            counts = self._counts(self._topics)
        except BrokerError as exc:  # broker unreachable: not a change; the data path has its own bounds
            if not exc.retriable:
                raise  # not an outage: the service stops and reports it (runner.py)
            log.warning("cannot read topic metadata (%s); retrying", exc)
            return False
        problems = topic_changes(counts, self._topics, self._partitions)
        if problems and not self._reported:
            self._reported = True
            error = TopicsChanged(
                "output topics changed under the worker: " + "; ".join(problems) + " (recreate them with "
                "`streamer topics create`; outputs go to their request's partition number)"
            )
            self._on_change(error)  # the worker says it, as its one CRITICAL line, and exits
        return False
