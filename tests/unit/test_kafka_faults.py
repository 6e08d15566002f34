"""Kafka client errors that must clear within a bound (``core.kafka_faults``), and how the batch engine's client
reports them (``adapters.kafka_consumer``): a fake clock, constructed errors, statistics JSON as librdkafka
writes it. No broker."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import KafkaError

from streamer.adapters.kafka_consumer import fault_of, positions_of
from streamer.core import kafka_faults
from streamer.core.errors import PersistentKafkaError
from streamer.core.kafka_faults import (
    AUTHORIZATION,
    GROUP_PROTOCOL,
    NOT_FETCHING,
    NOT_JOINED,
    TOPIC_MISSING,
    FaultClock,
)
from streamer.services.kafka_faults import FaultWatch


def test_a_fault_repeated_for_ever_is_one_fault_open_since_its_first_sighting() -> None:
    clock = FaultClock(60.0)
    for now in range(0, 60, 3):  # librdkafka: INCONSISTENT_GROUP_PROTOCOL every 3 s
        clock.seen(GROUP_PROTOCOL, "group g", f"JoinGroup failed at {now}", float(now))
        assert clock.overdue(float(now)) is None
    verdict = clock.overdue(60.0)
    assert verdict is not None and verdict.fault.since == 0.0
    assert verdict.cause.detail == "JoinGroup failed at 57"  # the last words, the first clock


def test_a_cleared_fault_starts_over_and_other_subjects_are_kept() -> None:
    clock = FaultClock(10.0)
    clock.seen(AUTHORIZATION, "group g", "refused", 0.0)
    clock.seen(AUTHORIZATION, "topic t", "refused", 0.0)
    clock.clear(AUTHORIZATION, subject="group g")
    assert [f.subject for f in clock.open()] == ["topic t"]
    clock.clear(AUTHORIZATION)
    clock.seen(AUTHORIZATION, "group g", "refused again", 9.0)
    assert clock.overdue(18.0) is None and clock.overdue(19.0) is not None
    with pytest.raises(ValueError):
        clock.seen("no-such-kind", "x", "y", 0.0)


def test_a_generic_fault_is_explained_by_the_most_specific_one_open_beside_it() -> None:
    clock = FaultClock(60.0)
    clock.seen(NOT_JOINED, "group g", "joining the group", 0.0)  # since the subscription
    clock.seen(GROUP_PROTOCOL, "group g", "Inconsistent group protocol", 3.0)
    verdict = clock.overdue(60.0)
    assert verdict is not None and verdict.fault.kind == NOT_JOINED and verdict.cause.kind == GROUP_PROTOCOL
    line = verdict.message(60.0)
    assert "give each engine its own STREAMER_GROUP_ID" in line and "not cleared for 60 s" in line
    assert "\n" not in line
    alone = FaultClock(60.0)
    alone.seen(NOT_JOINED, "group g", "rebalancing", 0.0)
    assert "kafka-consumer-groups" in alone.overdue(61.0).message(60.0)  # type: ignore[union-attr]


def test_every_kind_names_a_cause_and_a_fix_and_codes_map_to_kinds() -> None:
    for kind, remedy in kafka_faults.REMEDIES.items():
        assert remedy.cause and remedy.fix, kind
    assert kafka_faults.kind_of_code(23) == GROUP_PROTOCOL
    assert kafka_faults.kind_of_code(29) == kafka_faults.kind_of_code(30) == AUTHORIZATION
    assert kafka_faults.kind_of_code(3) == TOPIC_MISSING
    assert kafka_faults.kind_of_code(7) is None  # REQUEST_TIMED_OUT clears by itself


def test_a_partition_behind_whose_position_does_not_move_is_not_fetching() -> None:
    clock = FaultClock(10.0)
    clock.fetched("req", {0: (100, 150), 1: (7, 7)}, 0.0)
    clock.fetched("req", {0: (100, 150), 1: (7, 7)}, 5.0)
    assert [(f.kind, f.subject, f.since) for f in clock.open()] == [(NOT_FETCHING, "req[0]", 0.0)]
    assert clock.overdue(9.9) is None
    verdict = clock.overdue(10.0)
    assert verdict is not None and "position 100, 50 behind" in verdict.message(10.0)


@pytest.mark.parametrize(
    ("sample", "why"),
    [
        ({0: (101, 150)}, "the position moved"),
        ({0: (150, 150)}, "caught up"),
        ({0: (100, None)}, "end unknown"),
        ({0: (None, 150)}, "position unknown"),
        ({}, "revoked"),
    ],
)
def test_a_partition_that_moves_catches_up_is_unknown_or_goes_is_no_fault(sample: dict, why: str) -> None:
    clock = FaultClock(10.0)
    clock.fetched("req", {0: (100, 150)}, 0.0)
    clock.fetched("req", {0: (100, 150)}, 5.0)
    assert clock.open(), why
    clock.fetched("req", sample, 6.0)
    assert clock.open() == [] and clock.overdue(100.0) is None, why


def test_backpressure_is_not_a_fetch_fault_and_the_clock_restarts_after_it() -> None:
    clock = FaultClock(10.0)
    clock.fetched("req", {0: (100, 150)}, 0.0)
    clock.fetched("req", {0: (100, 150)}, 5.0, wanting=False)  # the pipeline is full: the watchdog's case
    assert clock.open() == []
    clock.fetched("req", {0: (100, 150)}, 6.0)
    clock.fetched("req", {0: (100, 150)}, 15.0)
    assert clock.overdue(15.9) is None and clock.overdue(16.0) is not None


def test_a_transaction_marker_after_the_last_record_is_no_lag() -> None:
    """Measured on the embedded broker: five records and their commit marker leave librdkafka's position at 6
    and the end at 6, while the last record consumed is 4 (lag 1 for ever by the last consumed offset)."""
    clock = FaultClock(10.0)
    for now in (0.0, 5.0, 50.0):
        clock.fetched("req", {0: (6, 6)}, now)
    assert clock.overdue(50.0) is None


def test_the_watch_says_one_verdict_once() -> None:
    now = [0.0]
    said: list[PersistentKafkaError] = []
    watch = FaultWatch(5.0, said.append, clock=lambda: now[0])
    watch.seen(GROUP_PROTOCOL, "group g", "Inconsistent group protocol")
    assert watch.check() is False and said == []
    now[0] = 5.0
    watch.check()
    watch.check()
    assert len(said) == 1 and said[0].exit_code == 7 and "STREAMER_GROUP_ID" in str(said[0])


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError.INCONSISTENT_GROUP_PROTOCOL, (GROUP_PROTOCOL, "group g")),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, (AUTHORIZATION, "group g")),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, (AUTHORIZATION, "topic req")),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, (TOPIC_MISSING, "topic req")),
        (KafkaError._UNKNOWN_TOPIC, (TOPIC_MISSING, "topic req")),
        (KafkaError._AUTHENTICATION, (AUTHORIZATION, "the consumer")),
        (KafkaError._TRANSPORT, None),
        (KafkaError.REQUEST_TIMED_OUT, None),
    ],
)
def test_librdkafka_errors_that_are_faults(code: int, expected: tuple[str, str] | None) -> None:
    assert fault_of(KafkaError(code), "req", "group g") == expected


def statistics(topic: str, partitions: dict[str, dict]) -> str:
    return json.dumps({"name": "rdkafka#consumer-1", "topics": {topic: {"partitions": partitions}}})


def test_positions_come_from_librdkafkas_statistics_for_the_partitions_the_consumer_wants() -> None:
    text = statistics(
        "req",
        {
            "0": {"desired": True, "app_offset": 6, "next_offset": 6, "ls_offset": 6, "hi_offset": 6},
            "1": {"desired": True, "app_offset": -1001, "next_offset": 0, "ls_offset": 0, "hi_offset": 3},
            "2": {"desired": True, "app_offset": -1001, "next_offset": -1001, "ls_offset": -1001},
            "3": {"desired": False, "app_offset": 9, "next_offset": 9, "ls_offset": 12},
            "-1": {"desired": False},
        },
    )
    # partition 1: an open transaction: the last stable offset (0), not the high watermark (3), is the end
    assert positions_of(text, "req") == {0: (6, 6), 1: (0, 0), 2: (None, None)}
    assert positions_of(text, "other") == {} and positions_of("not json", "req") == {}
