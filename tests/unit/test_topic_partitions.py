"""``core.topic_partitions``: which topics break the partition rule, and the commands that repair them."""

from __future__ import annotations

from streamer.core.topic_partitions import describe, disagreeing, repair


def test_the_topics_that_disagree_with_the_target_are_listed_in_order() -> None:
    counts = {"requests": 4, "predictions": 8, "requests.dlq": 8}
    assert disagreeing(counts, 4) == ["predictions", "requests.dlq"]
    assert disagreeing(counts, 8) == ["requests"]
    assert disagreeing({"a": 2, "b": 2}, 2) == []
    assert describe(counts) == "requests=4, predictions=8, requests.dlq=8"


def test_the_repair_deletes_and_recreates_with_the_target_count() -> None:
    text = repair({"requests": 4, "predictions": 8, "requests.dlq": 8}, 4)
    assert "`streamer topics delete predictions requests.dlq --yes`" in text
    assert "`streamer topics create --partitions 4`" in text
    assert "--alter" not in text  # a count can be raised, never lowered: no alternative here


def test_raising_a_smaller_count_is_offered_on_apache_kafka() -> None:
    text = repair({"requests": 8, "predictions": 4}, 8, "streamer topics create predictions")
    assert "`streamer topics delete predictions --yes`" in text
    assert "`streamer topics create predictions --partitions 8`" in text
    assert "`kafka-topics.sh --alter --partitions 8` can raise predictions instead" in text
