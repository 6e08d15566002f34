"""A fuzz corpus through Kafka: a worker answers every hostile message with one prediction or one dead letter.

~300 messages from a fixed-seed mutator (``strategies.corpus``): arbitrary bytes, mutated JSON and OIP requests,
tombstones, values nested 100 000 deep (also in fields the model never reads), two objects spliced into one
value, binary / empty / absent / 20 kB keys, arbitrary ``streamer-model`` headers. Each request must get exactly
one output, matched by its ``streamer-source-*`` headers, keyed like the request; a dead letter carries the
request's bytes and a documented reason; the worker is still running at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest

from streamer.adapters import devstack
from streamer.core.errors import DEAD_LETTER_REASONS
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all
from tests.fuzz.strategies import corpus

pytestmark = pytest.mark.e2e

COUNT = 300


def test_every_corpus_message_gets_exactly_one_prediction_or_dead_letter(
    kafka_broker: devstack.ServerInfo, topics: Callable[..., Topics], worker_factory: Callable[..., WorkerProcess]
) -> None:
    messages = corpus(COUNT, seed=14)
    assert len({value for _, value, _ in messages}) > COUNT // 2  # a varied corpus, not one message repeated
    t = topics(4)
    worker = worker_factory(t)
    worker.wait_assigned()
    produce(kafka_broker.address, t.requests, messages)
    outputs = read_all(kafka_broker.address, [t.predictions, t.dlq], COUNT, timeout_s=60)
    requests = read_all(kafka_broker.address, [t.requests], COUNT, settle_s=0.2)
    assert len(requests) == COUNT
    by_source = {(m.partition(), m.offset()): m for m in requests}
    answered = Counter()
    reasons = Counter()
    for output in outputs:
        headers = headers_of(output)
        assert headers["streamer-source-topic"].decode() == t.requests
        source_at = (int(headers["streamer-source-partition"]), int(headers["streamer-source-offset"]))
        answered[source_at] += 1
        source = by_source[source_at]
        assert output.partition() == source.partition()
        assert output.key() == source.key()
        if output.topic() == t.predictions:
            body = json.loads(output.value())
            assert body["source"]["offset"] == source.offset()
            reasons["prediction"] += 1
        else:
            reason = headers["streamer-error"].decode()
            assert reason in DEAD_LETTER_REASONS
            assert output.value() == source.value()
            reasons[reason] += 1
    assert set(answered) == set(by_source), f"{len(by_source) - len(answered)} requests unanswered"
    assert max(answered.values()) == 1, [at for at, n in answered.items() if n > 1]
    assert reasons["prediction"] > 0 and reasons["invalid-json"] > 0 and reasons["schema"] > 0, reasons
    assert worker.process.poll() is None, worker.log()[-3000:]
