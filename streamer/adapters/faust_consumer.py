"""Faust (faust-streaming) and its aiokafka consumer: every reach into their private API is in this module.

faust-streaming builds its aiokafka consumer with ``fetch_max_wait_ms=1500`` and reads committed data only under
its own exactly-once guarantee, with no setting for either. A broker that answers a fetch only when the wait is
over (the embedded one does, measured) then adds up to 1.5 s to every request -- with 5 ms the demo's p50 went
from ~970 ms to a few ms -- and the read-back recovery needs ``read_committed`` (Faust's exactly-once cannot
start on the embedded broker). The engine also commits exact offsets (the ledgers'), which Faust's public
``commit`` does not take: it commits the offsets Faust itself tracked as acknowledged.

No global monkeypatch: ``TunedApp`` is a ``faust.App`` whose transport (``_new_transport``, the app's factory
of its transport) is ``StreamerTransport``, whose consumer class makes ``StreamerConsumerThread`` threads.

What is reached into, each checked by ``tests/contract/test_faust_internals.py`` against the installed versions
(pinned in ``pyproject.toml``), which fails naming the attribute when an upgrade removes or renames it:

1. ``faust.App._new_transport``; ``faust.transport.drivers.aiokafka.Transport.Consumer``,
   ``Consumer._new_consumer_thread``, ``AIOKafkaConsumerThread._create_worker_consumer(transport)``: overridden.
2. ``aiokafka.AIOKafkaConsumer._fetch_max_wait_ms`` and ``._isolation_level``: set on the consumer Faust
   built, before it starts (``start()`` passes both to the ``Fetcher`` it creates).
3. ``AIOKafkaConsumerThread._consumer`` and ``aiokafka Fetcher._fetch_max_wait_ms``: the running fetcher's
   wait, changed while it runs (``set_fetch_wait``; aiokafka reads it for every fetch request it builds).
4. ``faust ThreadDelegateConsumer._thread`` and ``AIOKafkaConsumerThread.commit(offsets)``: exact offsets
   committed on the consumer's own thread (``commit_offsets``).
5. ``mode.Worker.install_signal_handlers``: extended (``StreamerWorker``), so that a stop requested before Faust
   installed its handlers is handed to them.
6. ``AIOKafkaConsumer._coordinator`` and ``GroupCoordinator._pending_exception``: a fatal group error aiokafka
   holds for a ``getmany`` that Faust never calls before an assignment (``group_error``: an inconsistent group
   protocol is logged once, then nothing); ``AIOKafkaConsumer.last_stable_offset``: the end a read_committed
   consumer may read up to (``positions``).
7. ``mode.Service.wait_first`` as Faust's fetch loop calls it (``Consumer._drain_messages``:
   ``wait_first(callback(message), self.suspend_flow.wait())``), ``Consumer.suspend_flow`` and ``Service._stopped``
   / ``._crashed``: overridden (``StreamerConsumer.wait_first``), so that a message's delivery to its stream costs a
   coroutine step, not four tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT
from mode.services import WaitResults

from streamer.core.types import Records

log = logging.getLogger(__name__)

READ_COMMITTED = "read_committed"


@dataclass(frozen=True, slots=True)
class FetchTuning:
    """How the worker's aiokafka consumer fetches: its wait (ms) and whether it skips aborted transactions."""

    fetch_wait_ms: int
    read_committed: bool = True


def tune(consumer: aiokafka.AIOKafkaConsumer, tuning: FetchTuning) -> None:
    """Set the fetch wait and isolation level of a consumer that has not started yet."""
    for attribute in ("_fetch_max_wait_ms", "_isolation_level"):
        if not hasattr(consumer, attribute):
            raise RuntimeError(f"aiokafka.AIOKafkaConsumer has no {attribute}: this aiokafka is not the one tested")
    consumer._fetch_max_wait_ms = tuning.fetch_wait_ms
    if tuning.read_committed:
        consumer._isolation_level = READ_COMMITTED


class StreamerConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, building its worker consumer with the app's ``FetchTuning``."""

    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        tuning = getattr(self.app, "fetch_tuning", None)
        if tuning is not None:
            tune(consumer, tuning)
            log.debug(
                "faust consumer: fetch wait %s ms, read_committed=%s", tuning.fetch_wait_ms, tuning.read_committed
            )
        return consumer

    def set_fetch_wait(self, fetch_wait_ms: int) -> bool:
        """Change the running fetcher's wait; False before the consumer has started."""
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is None:
            return False
        fetcher._fetch_max_wait_ms = fetch_wait_ms
        return True


class StreamerConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with a tuned thread, committing exact offsets on request, delivering each fetched
    message to its stream without four tasks per message (``wait_first``)."""

    _thread: StreamerConsumerThread

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        """Faust's fetch loop (``Consumer._drain_messages``) hands each message to its stream with
        ``wait_first(callback(message), self.suspend_flow.wait())``: four tasks, an ``asyncio.wait`` and three
        cancellations per message -- the largest single cost of Faust's consumer (py-spy: a quarter of a bare Faust
        relay's loop). The delivery puts the event on the stream's queue without waiting (``put_nowait``), so it is
        run here as a plain coroutine step while the flow is on and the service neither stopped nor crashed; a
        delivery that does wait (a lock held during a subscription change) goes on under Faust's own
        ``wait_first``, which a rebalance interrupts as before. Every other call is Faust's."""
        if (
            len(coros) != 2
            or timeout is not None
            or not _waits_for(coros[1], self.suspend_flow)
            or self.suspend_flow.is_set()
            or self._stopped.is_set()
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        delivery, suspended = coros
        try:
            blocked_on = delivery.send(None)
        except StopIteration as done:
            suspended.close()
            return WaitResults([delivery], [done.value], False)
        return await super().wait_first(_Resumed(delivery, blocked_on), suspended)

    def _new_consumer_thread(self) -> StreamerConsumerThread:
        return StreamerConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit_offsets(self, offsets: Mapping[TP, int]) -> bool:
        """Commit exactly ``offsets`` (partition -> next offset to read); False when the group has rebalanced."""
        return bool(await self._thread.commit(offsets))

    def set_fetch_wait(self, fetch_wait_ms: int) -> bool:
        return self._thread.set_fetch_wait(fetch_wait_ms)


def _waits_for(coroutine: Any, event: asyncio.Event) -> bool:
    """Whether ``coroutine`` is ``event.wait()``, not started (the second argument Faust's fetch loop passes)."""
    frame = getattr(coroutine, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


class _Resumed:
    """An awaitable that goes on with a coroutine already run to its first wait on ``blocked_on`` (what a task
    would do): the futures it waits on pass through to the task that awaits this, and a cancellation goes in."""

    def __init__(self, coroutine: Any, blocked_on: Any) -> None:
        self._coroutine, self._blocked_on = coroutine, blocked_on

    def __await__(self) -> Generator[Any, None, Any]:
        coroutine, waiting = self._coroutine, self._blocked_on
        while True:
            try:
                yield waiting
            except BaseException as exc:  # cancelled (or thrown into) while waiting: the coroutine decides
                try:
                    waiting = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
                continue
            try:
                waiting = coroutine.send(None)
            except StopIteration as done:
                return done.value


class StreamerTransport(faust_aiokafka.Transport):
    Consumer = StreamerConsumer


class _NoSensorNoise(logging.Filter):
    """Drops Faust's "Missing sensor state for rebalance #N" warnings: faust-streaming 0.15 reads the empty
    sensor state of an app without sensors (this one) as missing and warns at every rebalance. Nothing is
    missing, and a clean start must log no warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Missing sensor state for rebalance" not in record.getMessage()


class StreamerWorker(faust.Worker):
    """Faust's worker, taking over a stop requested while the process started (``wiring.signals``).

    Faust installs its own SIGTERM/SIGINT handlers when its worker starts (they drain and commit through the
    app's shutdown signals). A stop recorded before that moment would otherwise be lost: once they are in place,
    ``requested()`` is asked and a recorded signal is sent again, to them."""

    def __init__(self, *args: Any, requested: Callable[[], signal.Signals | None], **kwargs: Any) -> None:
        self._stop_requested = requested
        super().__init__(*args, **kwargs)

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        earlier = self._stop_requested()
        if earlier is not None:
            log.info("stop requested by %s while starting: stopping", earlier.name)
            os.kill(os.getpid(), earlier)


class TunedApp(faust.App):
    """A Faust app whose consumer fetches as ``fetch_tuning`` says and commits exact offsets. Its log (Faust
    names the logger after the class's module: this one) goes through ``_NoSensorNoise``."""

    def __init__(self, id: str, *, fetch_tuning: FetchTuning, **options: Any) -> None:
        self.fetch_tuning = fetch_tuning
        super().__init__(id, **options)

    def _new_transport(self) -> StreamerTransport:
        return StreamerTransport(self.conf.broker_consumer, self)

    @property
    def tuned_consumer(self) -> StreamerConsumer:
        consumer = self.consumer
        if not isinstance(consumer, StreamerConsumer):  # the transport was replaced behind our back
            raise RuntimeError(f"the Faust app's consumer is a {type(consumer).__name__}, not StreamerConsumer")
        return consumer


log.addFilter(_NoSensorNoise())  # TunedApp's own log is this module's logger


async def commit(app: TunedApp, topic: str, offsets: Mapping[int, int]) -> bool:
    """Commit ``offsets`` (partition -> next offset to read) of ``topic``; a failure is logged, not raised (the
    next owner re-reads from the last commit and de-duplicates by read-back)."""
    if not offsets:
        return True
    try:
        return await app.tuned_consumer.commit_offsets({TP(topic, p): offset for p, offset in offsets.items()})
    except Exception as exc:
        log.warning("commit failed: %r", exc)
        return False


def highwater(app: faust.App, topic: str, partition: int) -> int | None:
    """The partition's high watermark as the consumer last saw it; None when unknown (not assigned any more,
    or the consumer has not started)."""
    try:
        return app.consumer.highwater(TP(topic, partition))
    except Exception:
        return None


def group_error(app: TunedApp) -> BaseException | None:
    """The group error aiokafka holds for the application (a fatal join error), or None."""
    consumer = getattr(app.tuned_consumer._thread, "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    error = getattr(coordinator, "_pending_exception", None)
    return error if isinstance(error, BaseException) else None


async def positions(
    app: TunedApp, topic: str, partitions: Sequence[int], timeout_s: float = 5.0
) -> dict[int, tuple[int | None, int | None]]:
    """``{partition: (position, end)}``: the consumer's position (past transaction markers: aiokafka moves it over
    control batches) and the last stable offset, None where unknown (not assigned any more, not fetched yet)."""
    consumer = app.tuned_consumer
    inner = getattr(consumer._thread, "_consumer", None)
    found: dict[int, tuple[int | None, int | None]] = {}
    for partition in partitions:
        tp = TP(topic, partition)
        try:
            position = await asyncio.wait_for(consumer.position(tp), timeout_s)
            end = inner.last_stable_offset(tp) if inner is not None else None
        except Exception:  # revoked meanwhile, or the consumer is not running: unknown, not a fault
            position = end = None
        found[partition] = (position, end)
    return found


def records_of(events: Sequence[EventT]) -> list[Records]:
    """One ``Records`` per partition of a chunk of Faust events, in consumption order."""
    by_partition: dict[int, Records] = {}
    for event in events:
        message = event.message
        records = by_partition.get(message.partition)
        if records is None:
            records = by_partition[message.partition] = Records(message.topic, message.partition, [], [], [], [], [])
        records.offsets.append(message.offset)
        records.keys.append(message.key)
        records.values.append(message.value)
        records.timestamps_ms.append(int((message.timestamp or 0) * 1000))
        headers = message.headers
        records.headers.append(_header_list(headers) if headers else None)
    return list(by_partition.values())


def _header_list(headers: Any) -> list[tuple[str, bytes | None]]:
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v if isinstance(v, bytes | None) else str(v).encode()) for k, v in items]


def broker_credentials(client: Mapping[str, Any]) -> Any:
    """Translate the librdkafka security settings of ``[kafka.client]`` into Faust/aiokafka credentials."""
    protocol = str(client.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=client.get("ssl.ca.location"))
        if client.get("ssl.certificate.location"):
            context.load_cert_chain(client["ssl.certificate.location"], client.get("ssl.key.location"))
    if protocol.startswith("SASL"):
        mechanism = str(client.get("sasl.mechanism", "PLAIN")).upper()
        username, password = client.get("sasl.username", ""), client.get("sasl.password", "")
        if mechanism.startswith("SCRAM"):
            return faust.SASLCredentials(username=username, password=password, mechanism=mechanism, ssl_context=context)
        return faust.SASLCredentials(username=username, password=password, ssl_context=context)
    return faust.SSLCredentials(context)
