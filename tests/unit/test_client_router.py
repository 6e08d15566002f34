"""The id matching of ``streamer.client`` without Kafka: ``Router`` and ``Waiter`` as plain values, plus the
client's wake-up of blocking and asyncio calls, and ``close`` racing calls that start on other threads."""

from __future__ import annotations

import asyncio
import itertools
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import msgspec
import pytest

from streamer.client import ClientClosed, DeadLetter, Prediction, ScoreTimeout, Source
from streamer.client.answers import read_id as _read_id
from streamer.client.answers import read_prediction as _read_prediction
from streamer.client.answers import source_of as _source_of
from streamer.client.kafka_client import ScoringClient, _wake
from streamer.client.router import Router, Waiter


def test_answers_fill_their_slots_in_request_order_whatever_order_they_come_in() -> None:
    router = Router()
    waiter = Waiter(["a", "b", "c"])
    router.add(waiter)
    assert len(router) == 3 and "b" in router
    completions = []
    for ident in ("c", "a", "b"):
        entry = router.claim(ident, None)
        assert entry is not None and entry[0] is waiter
        completions.append(router.fill(*entry, f"answer-{ident}"))
    assert completions == [False, False, True]
    assert waiter.results == ["answer-a", "answer-b", "answer-c"] and waiter.done and len(router) == 0


def test_a_stranger_or_a_second_answer_is_not_routed() -> None:
    router = Router()
    waiter = Waiter(["a"])
    router.add(waiter)
    assert router.claim("someone-else", None) is None
    assert router.claim(None, None) is None
    entry = router.claim("a", None)
    assert entry is not None and router.fill(*entry, "first")
    assert router.claim("a", None) is None  # a duplicate answer finds nothing in flight
    assert waiter.results == ["first"]


def test_an_id_in_flight_twice_is_refused_and_nothing_registered() -> None:
    router = Router()
    router.add(Waiter(["a"]))
    with pytest.raises(ValueError, match="a"):
        router.add(Waiter(["b", "a"]))
    with pytest.raises(ValueError, match="c"):
        router.add(Waiter(["c", "c"]))
    assert "b" not in router and "c" not in router and len(router) == 1


def test_once_delivered_an_answer_from_another_place_with_the_same_id_is_someone_elses() -> None:
    router = Router()
    waiter = Waiter(["r-1"])
    router.add(waiter)
    router.delivered(waiter, 0, ("requests", 2, 40))
    assert router.claim("r-1", ("requests", 5, 7)) is None  # another producer's request r-1
    assert router.claim("r-1", ("requests", 2, 40)) == (waiter, 0)


def test_before_the_delivery_report_the_id_alone_decides() -> None:
    router = Router()
    waiter = Waiter(["r-1"])
    router.add(waiter)
    assert router.claim("r-1", ("requests", 5, 7)) == (waiter, 0)


def test_an_answer_without_a_readable_id_is_matched_by_its_source() -> None:
    router = Router()
    waiter = Waiter(["x", "y"])
    router.add(waiter)
    router.delivered(waiter, 1, ("requests", 0, 9))
    assert router.claim(None, ("requests", 0, 8)) is None
    assert router.claim(None, ("requests", 0, 9)) == (waiter, 1)
    assert router.claim(None, ("requests", 0, 9)) is None


def test_drop_forgets_the_missing_ids_and_keeps_what_arrived() -> None:
    router = Router()
    waiter = Waiter(["a", "b"])
    other = Waiter(["c"])
    router.add(waiter)
    router.add(other)
    router.delivered(waiter, 1, ("requests", 0, 1))
    router.fill(*router.claim("a", None), "answer-a")  # type: ignore[misc]
    router.drop(waiter)
    assert waiter.missing() == ["b"] and waiter.results == ["answer-a", None]
    assert router.claim("b", None) is None and router.claim(None, ("requests", 0, 1)) is None
    assert "c" in router and len(router) == 1


def test_a_failed_delivery_settles_its_slot_and_a_late_answer_is_ignored() -> None:
    router = Router()
    waiter = Waiter(["a"])
    router.add(waiter)
    assert router.settle(waiter, 0, "not delivered")
    assert waiter.results == ["not delivered"] and router.claim("a", None) is None
    assert not router.settle(waiter, 0, "twice")


def test_closing_fails_every_waiter_once() -> None:
    router = Router()
    first, second = Waiter(["a", "b"]), Waiter(["c"])
    router.add(first)
    router.add(second)
    error = RuntimeError("closed")
    failed = router.fail_all(error)
    assert {id(w) for w in failed} == {id(first), id(second)}
    assert first.error is error and first.done and len(router) == 0
    assert not router.fill(first, 0, "late")


def test_wake_ups_reach_blocking_and_asyncio_callers() -> None:
    blocking = Waiter(["a"], Future())
    ScoringClient._finish([blocking])
    assert blocking.context.done()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiters = [Waiter([str(i)], loop.create_future()) for i in range(3)]
        calls: list[object] = []
        original = loop.call_soon_threadsafe

        def counted(*args: object) -> object:
            calls.append(args)
            return original(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        await loop.run_in_executor(None, ScoringClient._finish, waiters)
        await asyncio.wait_for(asyncio.gather(*(w.context for w in waiters)), 5)
        wakes = [call for call in calls if call[0] is _wake]
        assert len(wakes) == 1  # one wake-up of the loop for the whole batch of answers

    asyncio.run(main())


def prediction_value(request_id: str, score: float, offset: int) -> bytes:
    """A whole prediction envelope (the client reads it through the declaration: a partial one is unreadable)."""
    head = b'{"id":"%s","model":"fraud","version":"1","score":%r,"label":0,"outputs":{},' % (request_id.encode(), score)
    return head + b'"source":{"topic":"requests","partition":0,"offset":%d},"latency_ms":1.0}' % offset


def test_what_the_thread_reads_of_an_answer() -> None:
    assert _read_id(b'{"id": "r-1", "model": "fraud", "score": 0.5}').id == "r-1"
    assert _read_id(b'{"features": {"a": 1}}').id is None
    for bad in (b"not json", b"[1, 2]", b'{"id": 7}'):
        with pytest.raises(Exception):  # noqa: B017 -- the client treats any of msgspec's errors as "no id"
            _read_id(bad)
    value = (
        b'{"id":"r-1","model":"fraud","version":"1","score":0.93,"label":1,"outputs":{"p":[0.07,0.93]},'
        b'"decision":"review","source":{"topic":"requests","partition":3,"offset":1042},"latency_ms":4.1}'
    )
    prediction = _read_prediction(value)
    assert isinstance(prediction, Prediction)
    assert (prediction.id, prediction.version, prediction.score, prediction.decision) == ("r-1", "1", 0.93, "review")
    assert prediction.source == Source("requests", 3, 1042)
    for partial in (b'{"id":"r-1","score":0.5}', value.replace(b'"version":"1"', b'"version":1')):
        with pytest.raises(msgspec.ValidationError):  # not the envelope: the client says the answer is unreadable
            _read_prediction(partial)
    headers = [("streamer-source-topic", b"requests"), ("streamer-source-partition", b"3")]
    assert _source_of(headers) is None
    assert _source_of([*headers, ("streamer-source-offset", b"1042")]) == ("requests", 3, 1042)


def test_errors_say_what_happened_and_survive_pickling() -> None:
    dead = DeadLetter("r-1", "schema", "feature 'amount' is a string", Source("requests", 0, 5), b"k", b"{}")
    assert isinstance(dead, Exception) and dead.offset == 5 and "schema" in str(dead)
    assert pickle.loads(pickle.dumps(dead)).reason == "schema"
    timeout = ScoreTimeout(["a", "b", "c", "d"], [1, None, None, None, None], 2.0)
    assert isinstance(timeout, TimeoutError) and "4 of 5" in str(timeout)


class FakeRecord:
    """What the consumer thread reads of a record (confluent_kafka.Message's accessors)."""

    def __init__(self, topic: str, value: bytes, headers: list | None = None, key: bytes | None = None) -> None:
        self._topic, self._value, self._headers, self._key = topic, value, headers, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list | None:
        return self._headers

    def key(self) -> bytes | None:
        return self._key


def routing_client() -> ScoringClient:
    """The client's routing half only: no producer, consumer or thread."""
    client = ScoringClient.__new__(ScoringClient)
    client._router, client._lock = Router(), threading.Lock()
    client.requests_topic, client.predictions_topic, client.dlq_topic = "requests", "predictions", "requests.dlq"
    return client


def source(offset: int, topic: str = "requests") -> list[tuple[str, bytes]]:
    return [
        ("streamer-source-topic", topic.encode()),
        ("streamer-source-partition", b"0"),
        ("streamer-source-offset", str(offset).encode()),
    ]


def test_the_thread_routes_predictions_and_dead_letters_and_skips_the_rest() -> None:
    client = routing_client()
    waiter = Waiter(["a", "b", "c"], Future())
    client._router.add(waiter)
    client._router.delivered(waiter, 2, ("requests", 0, 12))
    feedback_dead = [("streamer-error", b"schema"), *source(3, "feedback")]
    client._route(
        [
            FakeRecord("predictions", b'{"id":"stranger","score":0.1}', source(1)),
            FakeRecord("requests.dlq", b'{"id":"b","label":"x"}', feedback_dead),  # a label's dead letter
            FakeRecord("predictions", prediction_value("a", 0.25, 10), source(10)),
            FakeRecord("requests.dlq", b"not json", source(99)),  # someone else's unreadable request
        ]
    )
    assert waiter.results[0].score == 0.25 and waiter.results[1] is None
    client._route(
        [
            FakeRecord(
                "requests.dlq",
                b'{"id":"b","features":{"amount":"x"}}',
                [("streamer-error", b"schema"), ("streamer-error-detail", b"amount is a string"), *source(11)],
                key=b"k",
            ),
            FakeRecord("requests.dlq", b'{"id":"c","features":{"amo', [("streamer-error", b"too-large"), *source(12)]),
        ]
    )
    assert waiter.done and waiter.context.done()
    dead_b, dead_c = waiter.results[1], waiter.results[2]
    assert isinstance(dead_b, DeadLetter) and (dead_b.reason, dead_b.detail, dead_b.key) == (
        "schema",
        "amount is a string",
        b"k",
    )
    assert dead_b.source == Source("requests", 0, 11)
    assert isinstance(dead_c, DeadLetter) and dead_c.id == "c" and dead_c.reason == "too-large"  # cut: by source


def test_an_unreadable_prediction_ends_its_call_at_once() -> None:
    """Its id was read, so the request is answered: the slot says the answer was unreadable instead of the call
    waiting out its timeout."""
    from streamer.client.results import UnreadableAnswer

    client = routing_client()
    waiter = Waiter(["a"], Future())
    client._router.add(waiter)
    client._router.delivered(waiter, 0, ("requests", 0, 10))
    client._route([FakeRecord("predictions", b'{"id":"a","score":0.2', source(10))])  # claimed by its source
    assert waiter.done and waiter.context.done()
    assert isinstance(waiter.results[0], UnreadableAnswer) and waiter.results[0].id == "a"


class SilentKafka:
    """A producer that takes every record and never delivers an answer, and a consumer to close."""

    def __init__(self) -> None:
        self.sent = 0

    def produce(self, topic: str, value: bytes, key: bytes | None, **_: object) -> None:
        self.sent += 1

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0

    def close(self) -> None:
        pass


def closable_client() -> ScoringClient:
    """The client minus Kafka: its sending and closing run for real, no answer ever comes."""
    client = routing_client()
    client._closed, client._running = False, True
    client._producer = client._consumer = SilentKafka()  # type: ignore[assignment]
    client._thread = threading.Thread(target=lambda: None)
    client._thread.start()
    client._prefix, client._counter, client.timeout_s = "c", itertools.count(), 30.0
    return client


def requests_closing(client: ScoringClient) -> Iterator[dict[str, float]]:
    """``close`` lands between a call's start and the registration of its requests (as from another thread)."""
    yield {"amount": 1.0}
    client.close()
    yield {"amount": 2.0}


def test_a_call_racing_close_is_told_the_client_closed_not_left_to_time_out() -> None:
    """The call had passed no check yet when ``close`` failed everything in flight: its requests must not be
    registered afterwards and waited for until the timeout (a ``ScoreTimeout``, before the fix)."""
    client = closable_client()
    with pytest.raises(ClientClosed):
        client.score_many(requests_closing(client), timeout_s=5.0)
    assert len(client._router) == 0

    other = closable_client()

    async def main() -> None:
        with pytest.raises(ClientClosed):
            await other.ascore_many(requests_closing(other), timeout_s=5.0)

    asyncio.run(main())
    with pytest.raises(ClientClosed):
        other.score({"amount": 3.0})


def test_every_call_of_many_threads_ends_with_client_closed_when_the_client_closes() -> None:
    """Calls start on 8 threads while another closes the client: each ends at once with ``ClientClosed`` --
    failed in flight or refused at registration -- and none waits out its (long) timeout."""
    client = closable_client()
    start = threading.Barrier(9)
    outcomes: list[BaseException | None] = []

    def caller() -> None:
        start.wait()
        for _ in range(50):
            try:
                client.score_many([{"amount": 1.0}, {"amount": 2.0}], timeout_s=60.0)
                outcomes.append(None)
            except (ClientClosed, ScoreTimeout) as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.wait()
    client.close()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == 400 and all(isinstance(o, ClientClosed) for o in outcomes), outcomes[:3]
    assert len(client._router) == 0
