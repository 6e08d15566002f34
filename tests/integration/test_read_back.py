"""The read-back against the real broker: what a new owner of a partition learns from the output logs.

Outputs are written as the worker writes them (source headers), with another source's outputs interleaved
(the window must widen past them), and a committed position for one partition only: that partition gets the
exact list of answered offsets from its committed position on, the other the per-kind watermarks alone.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.adapters import devstack
from streamer.adapters.kafka_readback import read_back
from streamer.core.headers import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from streamer.core.ledger import ReadBack


def test_a_new_owner_learns_every_answered_offset_from_the_committed_position_on(
    kafka_broker: devstack.ServerInfo, topic_factory: Callable[..., str], unique_name: Callable[[str], str]
) -> None:
    requests, predictions, dlq = topic_factory("req", 2), topic_factory("pred", 2), topic_factory("dlq", 2)
    group = unique_name("grp")
    producer = Producer({"bootstrap.servers": kafka_broker.address, "enable.idempotence": True})

    def output(topic: str, partition: int, offset: int, source: str = requests) -> None:
        headers = [(SOURCE_TOPIC, source.encode()), (SOURCE_PARTITION, str(partition)), (SOURCE_OFFSET, str(offset))]
        producer.produce(topic, b"{}", b"k", partition, headers=headers)

    # partition 0: requests 0-199 answered, except 180 (its dead letter was lost in a crash) and 190-199
    # (never scored); a dead letter every 10th; then 500 outputs of another topic's requests on top
    for offset in range(190):
        if offset != 180:
            output(dlq if offset % 10 == 0 else predictions, 0, offset)
    for offset in range(500):
        output(predictions, 0, offset, source="other-requests")
        if offset % 50 == 49:  # small batches: the broker's high watermark is the last batch's base offset + 1
            assert producer.flush(30) == 0
    # partition 1: answered 0-49, never committed
    for offset in range(50):
        output(predictions, 1, offset)
        if offset % 10 == 9:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0
    committer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": group, "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(requests, 0, 150)], asynchronous=False)
    committer.close()

    found = read_back(kafka_broker.address, {}, group, requests, predictions, dlq, [0, 1], tail=16)

    answered = frozenset(o for o in range(150, 190) if o != 180)
    assert found[0] == ReadBack(prediction=189, dead_letter=170, answered=answered, exact_above=149)
    assert found[1] == ReadBack(prediction=49, dead_letter=-1)
    # the request whose dead letter was lost is sent again, whatever it resolves to now; the others are not
    assert not found[0].skips(180, dead_letter=False) and not found[0].skips(180, dead_letter=True)
    assert found[0].skips(185, dead_letter=True) and found[0].skips(170, dead_letter=False)
    assert not found[0].skips(190, dead_letter=False)
    # a window capped before it reaches the committed position (a group reset far back) does not pretend to
    # list everything: that partition falls back to the watermarks (found in the window) instead of failing
    reset = unique_name("grp")
    committer = Consumer({"bootstrap.servers": kafka_broker.address, "group.id": reset, "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(requests, 1, 5)], asynchronous=False)
    committer.close()
    capped = read_back(kafka_broker.address, {}, reset, requests, predictions, dlq, [1], tail=16, max_window=16)
    assert capped[1] == ReadBack(prediction=49, dead_letter=-1)
