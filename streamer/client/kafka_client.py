"""``ScoringClient``: send requests to the request topic and wait for their answers, blocking or with asyncio.

One client = one idempotent producer + one consumer of the predictions and dead-letter topics + one thread.
The thread reads both topics for every call of the client, reads each answer's id and hands it to the waiting
call (``router.Router``); a call never consumes on its own, so a thousand concurrent calls cost one consumer.

Positioning (why no answer is missed): the constructor asks for the end offset of every partition of both
output topics and *assigns* the consumer at those explicit offsets before it returns -- no consumer group to
join, no asynchronous ``OFFSET_END`` reset racing the first send. An answer is written after its request, so
at an offset at or past the end the client saw. The embedded broker under-reports its high watermark (the last
batch's base offset + 1): the client then reads a few older records first, which match no id in flight and are
skipped. Records are read ``read_committed`` (contract section 3: exactly one answer per request). The
producer, too, is ready before the constructor returns (connected, its idempotent producer id assigned:
``kafka_admin.warmed_producer``), so the first call's time is the workers', not the client's start.

Per answer on the shared topics the thread does one msgspec decode of the ``id`` field and a dict lookup
(``answers.route_answers``). Wake-ups are batched: a blocking call's future is set once per call, asyncio calls
are woken with one ``call_soon_threadsafe`` per event loop and batch of answers.

Closing (``close``) and a call starting on another thread never race: ``_closed`` is set, and read by a call
registering its requests, under the router's lock, and ``close`` fails whatever is in flight after setting it.
A call is therefore either in flight when ``close`` fails it or refused at registration -- ``ClientClosed``
both ways, never a ``ScoreTimeout`` for an answer no thread will route any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamer import config
from streamer.adapters.kafka_admin import LIBRDKAFKA_LOG, client_config, warmed_producer
from streamer.client.answers import route_answers
from streamer.client.requests import Features, Request, RequestRecord, encode_requests
from streamer.client.results import ClientClosed, DeliveryFailed, Outcome, Prediction, ScoreTimeout
from streamer.client.router import Router, Waiter
from streamer.core.errors import StreamerError

__all__ = ["Request", "ScoringClient"]

log = logging.getLogger(__name__)


def _wake(futures: list[asyncio.Future[None]]) -> None:
    """On the caller's loop: wake the asyncio calls whose answers are all in."""
    for future in futures:
        if not future.done():
            future.set_result(None)


class ScoringClient:
    """Score requests through the workers: ``score``/``score_many`` block, ``ascore``/``ascore_many`` await.

    Settings are streamer's (``streamer.toml``, ``STREAMER_*``, the embedded stack's state file): the bootstrap
    servers, ``[kafka.client]`` (SASL/TLS and other librdkafka properties) and the topic names; any of them can
    be given here instead. Use it as a context manager, or call ``close()``: it is thread-safe and one client
    serves every thread and event loop of a process.
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: config.Settings | None = None,
        requests_topic: str | None = None,
        predictions_topic: str | None = None,
        dlq_topic: str | None = None,
        kafka_client: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
        linger_ms: int = 1,
        startup_timeout_s: float = 10.0,
    ) -> None:
        s = settings if settings is not None else config.load()
        bootstrap = bootstrap or s.require_bootstrap()
        client = dict(s.kafka.client if kafka_client is None else kafka_client)
        self.requests_topic = requests_topic or s.topics.requests
        self.predictions_topic = predictions_topic or s.topics.predictions
        self.dlq_topic = dlq_topic or s.topics.dlq
        self.timeout_s = timeout_s
        self._prefix = uuid.uuid4().hex
        self._counter = itertools.count()
        self._router = Router()
        self._lock = threading.Lock()
        self._closed = False
        self._consumer = Consumer(
            client_config(
                bootstrap,
                client,
                **{
                    "group.id": f"streamer-client-{self._prefix}",  # never joined: the client assigns
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": s.kafka.fetch_wait_max_ms,
                    "enable.partition.eof": False,
                },
            )
        )
        try:
            self._assign_at_end(startup_timeout_s)
        except BaseException:
            self._consumer.close()
            raise
        # warmed (connected, producer id assigned) before the first call's clock starts: a cold idempotent
        # producer holds its first messages ~500 ms on the embedded broker (kafka_admin.warmed_producer)
        try:
            self._producer, _ = warmed_producer(
                client_config(
                    bootstrap,
                    client,
                    **{
                        "enable.idempotence": True,
                        "acks": "all",
                        "linger.ms": linger_ms,
                        "message.timeout.ms": max(int(timeout_s * 1000), 1000),
                    },
                ),
                startup_timeout_s,
            )
        except BaseException:
            self._consumer.close()
            raise
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="streamer-client", daemon=True)
        self._thread.start()

    def _assign_at_end(self, timeout_s: float) -> None:
        consumer = self._consumer
        try:
            metadata = consumer.list_topics(timeout=timeout_s)
            assignment = []
            for topic in (self.requests_topic, self.predictions_topic, self.dlq_topic):
                found = metadata.topics.get(topic)
                if found is None or found.error is not None:
                    raise StreamerError(f"topic {topic} does not exist (create it with `streamer topics create`)")
                if topic == self.requests_topic:
                    continue
                for partition in sorted(found.partitions):
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                    assignment.append(TopicPartition(topic, partition, max(high, 0)))
            consumer.assign(assignment)
        except KafkaException as exc:
            consumer.poll(0)  # delivers the queued log lines: the cause of a connection failure
            raise StreamerError(f"cannot reach the Kafka cluster: {exc}{LIBRDKAFKA_LOG.cause()}") from None

    # ------------------------------------------------------------------------------------------ blocking

    def score(
        self,
        features: Features,
        *,
        key: bytes | str | None = None,
        model: str | None = None,
        id: str | None = None,
        headers: Sequence[tuple[str, bytes | str]] | None = None,
        timeout_s: float | None = None,
    ) -> Prediction:
        """The prediction of one request. Raises ``DeadLetter`` when the worker dead-lettered it,
        ``ScoreTimeout`` (a ``TimeoutError``) when no answer came within ``timeout_s``."""
        outcome = self.score_many([Request(features, key, model, id, headers)], timeout_s=timeout_s)[0]
        if isinstance(outcome, Prediction):
            return outcome
        raise outcome

    def score_many(self, requests: Iterable[Request | Features], *, timeout_s: float | None = None) -> list[Outcome]:
        """The answers of many requests, in their order: a ``Prediction``, or a ``DeadLetter`` (returned, not
        raised) per request. All are produced at once, before the first wait; ``ScoreTimeout`` carries what
        did arrive (``.results``) when some answers are missing after ``timeout_s``."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        waiter, records = self._register(requests, Future())
        if not records:
            return []
        try:
            done = 0
            while done < len(records) and waiter.error is None:  # error: closed meanwhile, stop sending
                done = self._produce(waiter, records, done)
                if done < len(records):
                    self._producer.poll(0.005)  # the local queue is full: let it drain
            waiter.context.result(timeout)
        except FutureTimeout:
            raise self._timed_out(waiter, timeout) from None
        finally:
            if not waiter.done:
                with self._lock:
                    self._router.drop(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.results

    # ------------------------------------------------------------------------------------------ asyncio

    async def ascore(
        self,
        features: Features,
        *,
        key: bytes | str | None = None,
        model: str | None = None,
        id: str | None = None,
        headers: Sequence[tuple[str, bytes | str]] | None = None,
        timeout_s: float | None = None,
    ) -> Prediction:
        """``score`` for asyncio: the event loop is never blocked while the answer is awaited."""
        outcome = (await self.ascore_many([Request(features, key, model, id, headers)], timeout_s=timeout_s))[0]
        if isinstance(outcome, Prediction):
            return outcome
        raise outcome

    async def ascore_many(
        self, requests: Iterable[Request | Features], *, timeout_s: float | None = None
    ) -> list[Outcome]:
        """``score_many`` for asyncio. Cancelling the call forgets its requests (late answers are ignored)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter, records = self._register(requests, future)
        if not records:
            return []
        try:
            done = 0
            while done < len(records) and waiter.error is None:  # error: closed meanwhile, stop sending
                done = self._produce(waiter, records, done)
                if done < len(records):
                    await asyncio.sleep(0.005)  # the local queue is full: the thread's polls drain it
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise self._timed_out(waiter, timeout) from None
        finally:
            if not waiter.done:
                with self._lock:
                    self._router.drop(waiter)
        if waiter.error is not None:
            raise waiter.error
        return waiter.results

    # ------------------------------------------------------------------------------------------ lifecycle

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and the clients; calls still waiting, and calls starting from now on, raise
        ``ClientClosed``. Idempotent and thread-safe (module docstring: why ``_closed`` is set under the lock)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._producer.flush(timeout_s)
        self._running = False
        self._thread.join(timeout_s)
        with self._lock:
            failed = self._router.fail_all(ClientClosed("the scoring client was closed"))
        self._finish(failed)
        with contextlib.suppress(KafkaException, RuntimeError):
            self._consumer.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def __aenter__(self) -> ScoringClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # ------------------------------------------------------------------------------------------ sending

    def _register(self, requests: Iterable[Request | Features], context: Any) -> tuple[Waiter, list[RequestRecord]]:
        """Encode the requests (ids filled in) and put them in flight; ``ClientClosed`` once ``close`` began.

        The check and the registration are one step under the lock that ``close`` sets ``_closed`` under: a
        waiter registered here is in the router when ``close`` fails everything in flight."""
        ids, records = encode_requests(requests, self._prefix, self._counter)
        waiter = Waiter(ids, context)
        with self._lock:
            if self._closed:
                raise ClientClosed("the scoring client is closed")
            self._router.add(waiter)
        return waiter, records

    def _produce(self, waiter: Waiter, records: list[RequestRecord], start: int) -> int:
        """Produce ``records[start:]`` as far as the local queue takes them; the index reached."""
        produce, topic, delivered = self._producer.produce, self.requests_topic, self._delivered
        index = start
        try:
            for value, key, headers in itertools.islice(records, start, None):
                produce(topic, value, key, headers=headers, on_delivery=partial(delivered, waiter, index))
                index += 1
        except BufferError:
            pass
        except KafkaException as exc:  # refused locally (a record over message.max.bytes, ...)
            failed = DeliveryFailed(waiter.ids[index], str(exc.args[0]))
            with self._lock:
                complete = self._router.settle(waiter, index, failed)
            if complete:
                self._finish([waiter])
            index += 1
        return index

    def _delivered(self, waiter: Waiter, slot: int, error: KafkaError | None, message: Message) -> None:
        """Delivery report (on the client's thread): where the request went, or why it never will."""
        if error is None:
            with self._lock:
                self._router.delivered(waiter, slot, (message.topic(), message.partition(), message.offset()))
            return
        with self._lock:
            complete = self._router.settle(waiter, slot, DeliveryFailed(waiter.ids[slot], str(error)))
        if complete:
            self._finish([waiter])

    def _timed_out(self, waiter: Waiter, timeout_s: float) -> ScoreTimeout:
        with self._lock:
            self._router.drop(waiter)
            return ScoreTimeout(waiter.missing(), list(waiter.results), timeout_s)

    # ------------------------------------------------------------------------------------------ answers

    def _serve(self) -> None:
        # consume(n, timeout) waits until it has n records or the timeout is over: an answer would wait for
        # the timeout. So: block for the first record only (poll returns as soon as one is there), then take
        # what else is already fetched without waiting -- one wake-up per answer when idle, batches under load.
        next_record, consume, poll = self._consumer.poll, self._consumer.consume, self._producer.poll
        while self._running:
            try:
                first = next_record(0.05)
                messages = [] if first is None else [first, *consume(num_messages=1024, timeout=0)]
            except (KafkaException, RuntimeError) as exc:
                log.warning("scoring client: consume failed: %s", exc)
                messages = []
            poll(0)  # delivery reports first: the answers of this batch may need their source
            if messages:
                self._route(messages)

    def _route(self, messages: list[Message]) -> None:
        with self._lock:
            complete = route_answers(self._router, messages, self.requests_topic, self.dlq_topic)
        if complete:
            self._finish(complete)

    @staticmethod
    def _finish(waiters: list[Waiter]) -> None:
        """Wake the calls: a blocking call's future directly, asyncio calls once per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in waiters:
            context = waiter.context
            if isinstance(context, Future):
                if not context.done():
                    context.set_result(None)
            else:
                by_loop.setdefault(context.get_loop(), []).append(context)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits any more
                loop.call_soon_threadsafe(_wake, futures)
