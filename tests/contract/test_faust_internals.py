"""What ``adapters/faust_consumer.py`` reaches into in faust-streaming and aiokafka still exists, on the versions
installed (pinned in ``pyproject.toml``). An upgrade that removes or renames any of it fails here, naming the
attribute, instead of silently giving the worker 1.5 s fetch waits, uncommitted reads or lost commits.

The last test builds the worker's consumer exactly as Faust does (its consumer thread's ``on_start``) against
the real broker and reads back the fetch wait and isolation level the running fetcher uses.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.consumer.fetcher import READ_COMMITTED, Fetcher
from faust.transport import base as faust_transport_base
from faust.transport import consumer as faust_consumer_base
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service

from streamer.adapters import devstack
from streamer.adapters.faust_consumer import (
    FetchTuning,
    StreamerConsumer,
    StreamerConsumerThread,
    StreamerTransport,
    TunedApp,
)


def named(owner: Any, attribute: str) -> str:
    return f"{owner.__module__}.{owner.__qualname__}.{attribute}"


REACHED: list[tuple[Any, str]] = [
    (faust.App, "_new_transport"),  # overridden: the app's factory of its transport
    (faust_aiokafka.Transport, "Consumer"),  # replaced by StreamerConsumer
    (faust_aiokafka.Consumer, "_new_consumer_thread"),  # overridden: makes StreamerConsumerThread
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),  # overridden: tunes what it builds
    (faust_aiokafka.AIOKafkaConsumerThread, "on_start"),  # where Faust builds and starts the consumer
    (faust_aiokafka.AIOKafkaConsumerThread, "commit"),  # exact offsets, on the consumer's thread
    (faust_consumer_base.ThreadDelegateConsumer, "highwater"),  # public, read for the lag
    (aiokafka.AIOKafkaConsumer, "start"),
    (faust.Worker, "install_signal_handlers"),  # extended: a stop recorded before it is sent again (StreamerWorker)
    (aiokafka.AIOKafkaConsumer, "last_stable_offset"),  # the end a read_committed consumer may read up to
]


def test_the_group_error_aiokafka_holds_is_where_the_adapter_reads_it() -> None:
    """``faust_consumer.group_error``: ``AIOKafkaConsumer._coordinator._pending_exception`` (a fatal join error
    held for a ``getmany`` Faust never calls before an assignment)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    assert "self._coordinator = " in inspect.getsource(aiokafka.AIOKafkaConsumer)
    source = inspect.getsource(GroupCoordinator)
    assert "self._pending_exception = exc" in source and "def _push_error_to_user" in source


@pytest.mark.parametrize(("owner", "attribute"), REACHED, ids=[named(o, a) for o, a in REACHED])
def test_every_attribute_reached_into_exists(owner: Any, attribute: str) -> None:
    assert hasattr(owner, attribute), f"{named(owner, attribute)} is gone: adapters/faust_consumer.py needs it"


@pytest.mark.parametrize(
    ("function", "parameters"),
    [
        (faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer, ["self", "transport"]),
        (faust_aiokafka.AIOKafkaConsumerThread.commit, ["self", "offsets"]),
        (faust_transport_base.Transport.__init__, ["self", "url", "app"]),  # the driver's passes *args on
    ],
    ids=lambda value: value.__qualname__ if callable(value) else "",
)
def test_the_signatures_called_are_the_ones_installed(function: Callable[..., Any], parameters: list[str]) -> None:
    found = list(inspect.signature(function).parameters)
    assert found[: len(parameters)] == parameters, f"{function.__qualname__}{inspect.signature(function)}"


def test_the_consumer_thread_is_built_with_the_consumer_and_keywords_the_adapter_passes() -> None:
    signature = inspect.signature(faust_aiokafka.AIOKafkaConsumerThread.__init__)
    assert list(signature.parameters)[1] == "consumer", signature
    assert any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()), signature  # loop=, beacon=
    source = inspect.getsource(faust_aiokafka.Consumer._new_consumer_thread)
    assert "AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)" in source, source
    source = " ".join(inspect.getsource(faust.App._new_transport).split())
    assert "( self.conf.broker_consumer, self )" in source, source  # how StreamerTransport is built too


@pytest.mark.parametrize(
    ("owner", "function", "attribute", "keyword"),
    [
        (aiokafka.AIOKafkaConsumer, "__init__", "self._fetch_max_wait_ms", "fetch_max_wait_ms"),
        (aiokafka.AIOKafkaConsumer, "__init__", "self._isolation_level", "isolation_level"),
        (aiokafka.AIOKafkaConsumer, "start", "fetch_max_wait_ms=self._fetch_max_wait_ms", None),
        (aiokafka.AIOKafkaConsumer, "start", "isolation_level=self._isolation_level", None),
        (Fetcher, "__init__", "self._fetch_max_wait_ms", "fetch_max_wait_ms"),
        (Fetcher, "_get_actions_per_node", "self._fetch_max_wait_ms", None),  # read for every fetch request
    ],
)
def test_aiokafka_reads_the_private_attributes_set(
    owner: Any, function: str, attribute: str, keyword: str | None
) -> None:
    assert hasattr(owner, function), f"{named(owner, function)} is gone"
    method = getattr(owner, function)
    assert attribute in inspect.getsource(method), f"{named(owner, function)} no longer uses {attribute}"
    if keyword is not None:
        assert keyword in inspect.signature(method).parameters, f"{named(owner, function)} takes no {keyword}"


def test_the_tuned_app_builds_the_tuned_transport_consumer_and_thread() -> None:
    app = TunedApp("contract", fetch_tuning=FetchTuning(7), broker="kafka://127.0.0.1:9", web_enabled=False)
    assert isinstance(app.transport, StreamerTransport)
    assert isinstance(app.consumer, StreamerConsumer) and app.tuned_consumer is app.consumer
    assert isinstance(app.consumer._thread, StreamerConsumerThread)
    assert faust_aiokafka.Transport.Consumer is faust_aiokafka.Consumer  # nothing patched globally

    async def build() -> aiokafka.AIOKafkaConsumer:
        return app.consumer._thread._create_worker_consumer(app.transport)

    consumer = asyncio.run(build())
    assert (consumer._fetch_max_wait_ms, consumer._isolation_level) == (7, "read_committed")
    plain = faust.App("contract-plain", broker="kafka://127.0.0.1:9", web_enabled=False)
    assert type(plain.transport) is faust_aiokafka.Transport  # other apps keep Faust's own


def test_a_started_consumer_fetches_with_the_tuned_wait_and_isolation_and_follows_a_new_wait(
    kafka_broker: devstack.ServerInfo,
) -> None:
    app = TunedApp(
        "contract-started", fetch_tuning=FetchTuning(7), broker=f"kafka://{kafka_broker.address}", web_enabled=False
    )
    thread = app.tuned_consumer._thread

    async def check() -> None:
        await thread.on_start()  # Faust's own start of its consumer: builds (tuned) and starts it
        try:
            fetcher = thread._consumer._fetcher  # type: ignore[union-attr]
            assert fetcher._fetch_max_wait_ms == 7
            assert fetcher._isolation_level == READ_COMMITTED
            assert app.tuned_consumer.set_fetch_wait(250)
            assert fetcher._fetch_max_wait_ms == 250
        finally:
            await thread._consumer.stop()  # type: ignore[union-attr]

    asyncio.run(asyncio.wait_for(check(), timeout=60))


def test_faust_hands_each_fetched_message_to_its_stream_through_the_wait_first_the_consumer_overrides() -> None:
    """``StreamerConsumer.wait_first`` recognises Faust's per-message call by its second argument,
    ``self.suspend_flow.wait()``; a Faust that calls it otherwise would silently lose the fast path."""
    source = inspect.getsource(faust_consumer_base.Consumer._drain_messages)
    assert "await self.wait_first(" in source and "callback(message), self.suspend_flow.wait()" in source
    assert "self.suspend_flow = Event()" in inspect.getsource(faust_consumer_base.Consumer.__init__)
    assert faust_consumer_base.Event is asyncio.Event
    waiting = inspect.getsource(Service.wait_first)
    assert "stopped = self._stopped" in waiting and "crashed = self._crashed" in waiting
    assert list(inspect.signature(Service.wait_first).parameters) == ["self", "coros", "timeout"]


def stand_in_consumer() -> StreamerConsumer:
    """A ``StreamerConsumer`` with only what ``wait_first`` reads (no app, no broker)."""
    consumer = object.__new__(StreamerConsumer)
    consumer.suspend_flow = asyncio.Event()
    consumer._stopped, consumer._crashed = asyncio.Event(), asyncio.Event()
    consumer._loop = asyncio.get_running_loop()
    return consumer


def test_a_delivery_that_does_not_wait_is_one_coroutine_step_and_one_that_waits_is_faust_s_wait_first() -> None:
    async def scenario() -> None:
        consumer = stand_in_consumer()

        async def delivered(value: int) -> int:
            return value

        tasks = len(asyncio.all_tasks())
        result = await consumer.wait_first(delivered(7), consumer.suspend_flow.wait())
        assert (result.results, result.stopped, len(asyncio.all_tasks())) == ([7], False, tasks)

        lock = asyncio.Lock()
        await lock.acquire()

        async def delivered_after_the_lock() -> int:
            async with lock:
                return 8

        asyncio.get_running_loop().call_later(0.01, lock.release)
        waited = await consumer.wait_first(delivered_after_the_lock(), consumer.suspend_flow.wait())
        assert waited.results == [8]  # went on where it waited, under Faust's wait_first

        await lock.acquire()
        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        suspended = await consumer.wait_first(delivered_after_the_lock(), consumer.suspend_flow.wait())
        assert suspended.results == [True] and lock.locked()  # a rebalance interrupts a waiting delivery, as before

    asyncio.run(scenario())
