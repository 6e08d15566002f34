"""Kafka client errors that must clear within a bound: every decision about an error that does not go away lives
in this file -- which errors count, when one has lasted too long, and the one line the operator reads.

Found from outside: a worker whose group another engine had used received ``INCONSISTENT_GROUP_PROTOCOL`` every
3 s for ever (librdkafka) or once (aiokafka, then silence), and sat alive, unready and answering nothing; so
would a worker refused by the broker's authorizer, or whose partitions come back empty from every fetch while
records wait (a restarted embedded broker does this). A fault is a condition with a clock; the shell reports
sightings and clearances, and exits (``PersistentKafkaError``, exit 7) when ``overdue`` names one.

The kinds, from the most specific to the most general (``Remedy.rank``):

- ``GROUP_PROTOCOL``: the group's members speak another assignment protocol (the other engine uses the group);
- ``AUTHORIZATION``: the broker refuses this principal the topic, the group or the cluster, or its credentials;
- ``TOPIC_MISSING``: the request topic is unknown to the consumer;
- ``PRODUCER``: the output producer is refused (authorization, authentication);
- ``NOT_JOINED``: no assignment since the consumer subscribed or since its last rebalance began;
- ``NOT_FETCHING``: an assigned partition is behind and its position has not moved (``FaultClock.fetched``).

Invariants (``tests/unit/test_kafka_faults.py``):

1. A fault's clock starts at its first sighting; later sightings update its detail, never its start (an error
   repeated every 3 s for ever is one fault, open since the first), and only ``clear`` ends it.
2. ``overdue(now)`` is None until some fault has been open for ``bound_s``; then it is that fault's age with the
   most specific fault open at that moment as the cause: a generic "not joined" is explained by the protocol
   clash or the refusal beside it.
3. A partition is not fetching while its lag -- the end the consumer may read up to (the last stable offset
   under ``read_committed``) minus the consumer's own position -- is above zero and the position has not moved
   since it was first seen there. The consumer's position, not the last consumed offset: a transaction marker
   takes an offset that no record carries, and would leave an idle partition one behind for ever. Partitions
   not sampled any more (revoked), a sample taken while the engine does not want records (backpressure: the
   watchdog owns that case), an unknown position or end, all clear it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GROUP_PROTOCOL = "group-protocol"
AUTHORIZATION = "authorization"
TOPIC_MISSING = "topic-missing"
PRODUCER = "producer"
NOT_JOINED = "not-joined"
NOT_FETCHING = "not-fetching"


@dataclass(frozen=True, slots=True)
class Remedy:
    """What a kind of fault means for the operator: its cause, the fix, and how specific it is (lower: more)."""

    cause: str
    fix: str
    rank: int


REMEDIES: dict[str, Remedy] = {
    GROUP_PROTOCOL: Remedy(
        "the consumer group speaks another assignment protocol",
        "this group is used by the other engine: give each engine its own STREAMER_GROUP_ID (worker.group_id)",
        0,
    ),
    AUTHORIZATION: Remedy(
        "the broker refuses this client",
        "grant its principal Read and Describe on the request topic and the group, Write on the output topics, "
        "or fix the credentials in [kafka.client]",
        0,
    ),
    TOPIC_MISSING: Remedy(
        "the request topic is unknown to the consumer",
        "create it with `streamer topics create`, or name the right one in STREAMER_REQUESTS_TOPIC",
        1,
    ),
    PRODUCER: Remedy(
        "the output producer is refused",
        "grant its principal Write on the predictions and dead-letter topics, or fix the credentials in [kafka.client]",
        1,
    ),
    NOT_JOINED: Remedy(
        "the worker has no place in its consumer group",
        "check the group's coordinator and members (kafka-consumer-groups --describe --group <group>); the "
        "restarted worker joins again",
        2,
    ),
    NOT_FETCHING: Remedy(
        "partitions behind their end fetch nothing",
        "check the broker that leads them; the restarted worker, or the next owner, resumes from the last commit",
        2,
    ),
}

# Kafka protocol error codes (both clients report them: librdkafka's KafkaError.code(), aiokafka's errno).
KIND_OF_CODE: dict[int, str] = {
    3: TOPIC_MISSING,  # UNKNOWN_TOPIC_OR_PARTITION
    23: GROUP_PROTOCOL,  # INCONSISTENT_GROUP_PROTOCOL
    29: AUTHORIZATION,  # TOPIC_AUTHORIZATION_FAILED
    30: AUTHORIZATION,  # GROUP_AUTHORIZATION_FAILED
    31: AUTHORIZATION,  # CLUSTER_AUTHORIZATION_FAILED
    53: AUTHORIZATION,  # TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    58: AUTHORIZATION,  # SASL_AUTHENTICATION_FAILED
}


def kind_of_code(code: int) -> str | None:
    """The fault a Kafka protocol error code is a sighting of, or None (an error that clears by itself)."""
    return KIND_OF_CODE.get(code)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    subject: str  # what it is about: "group streamer", "requests[3]", "the output producer"
    detail: str  # the client's own words, last seen
    since: float


@dataclass(frozen=True, slots=True)
class Overdue:
    """The verdict: ``fault`` has been open past the bound; ``cause`` is the most specific fault open now."""

    fault: Fault
    cause: Fault
    now: float

    def message(self, bound_s: float) -> str:
        """The one line that names the cause and the fix."""
        remedy = REMEDIES[self.cause.kind]
        waited = self.now - self.fault.since
        return (
            f"{remedy.cause} ({self.cause.subject}: {self.cause.detail}), not cleared for {waited:.0f} s "
            f"(kafka.error_timeout_s = {bound_s:g}): {remedy.fix}"
        )


class FaultClock:
    """Open faults with their clocks; values in (``now``), verdicts out."""

    def __init__(self, bound_s: float) -> None:
        self.bound_s = bound_s
        self._open: dict[tuple[str, str], Fault] = {}
        self._positions: dict[int, tuple[int, float]] = {}  # partition -> (position, first seen there)

    def seen(self, kind: str, subject: str, detail: str, now: float) -> None:
        """A sighting: opens the fault at ``now`` unless it is open already (then only its detail changes)."""
        if kind not in REMEDIES:
            raise ValueError(f"unknown fault kind {kind!r}")
        key = (kind, subject)
        current = self._open.get(key)
        self._open[key] = Fault(kind, subject, detail, now if current is None else current.since)

    def clear(self, *kinds: str, subject: str | None = None) -> None:
        """End the faults of ``kinds`` (about ``subject`` only, when given)."""
        for key in [k for k in self._open if k[0] in kinds and (subject is None or k[1] == subject)]:
            del self._open[key]

    def fetched(
        self, topic: str, positions: Mapping[int, tuple[int | None, int | None]], now: float, wanting: bool = True
    ) -> None:
        """A sample of every assigned partition: ``{partition: (position, end)}``. ``wanting``: the engine asks
        its consumer for records (no backpressure)."""
        if not wanting:
            self._positions.clear()
            self.clear(NOT_FETCHING)
            return
        for partition in [p for p in self._positions if p not in positions]:  # revoked
            del self._positions[partition]
            self.clear(NOT_FETCHING, subject=f"{topic}[{partition}]")
        for partition, (position, end) in positions.items():
            subject = f"{topic}[{partition}]"
            if position is None or position < 0 or end is None or end < 0 or end <= position:
                self._positions.pop(partition, None)
                self.clear(NOT_FETCHING, subject=subject)
                continue
            previous = self._positions.get(partition)
            if previous is None or previous[0] != position:
                self._positions[partition] = (position, now)
                self.clear(NOT_FETCHING, subject=subject)
                continue
            self.seen(NOT_FETCHING, subject, f"position {position}, {end - position} behind", previous[1])

    def open(self) -> list[Fault]:
        return sorted(self._open.values(), key=lambda fault: fault.since)

    def overdue(self, now: float) -> Overdue | None:
        """The oldest fault open for ``bound_s`` or more, with the most specific open fault as its cause."""
        late = [fault for fault in self._open.values() if now - fault.since >= self.bound_s]
        if not late:
            return None
        oldest = min(late, key=lambda fault: fault.since)
        cause = min(self._open.values(), key=lambda fault: (REMEDIES[fault.kind].rank, fault.since))
        return Overdue(oldest, cause, now)
