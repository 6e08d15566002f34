"""The output sink: one idempotent confluent-kafka producer that writes released batches and reports each
batch's delivery once.

Predictions and dead letters go to an explicit partition (the request's partition number) with
``enable.idempotence``: per output partition the log holds a prefix of what was sent, in order, without
duplicates from retries. With ``enable.gapless.guarantee`` any failure that could leave a gap is fatal for the
producer, and ``message.timeout.ms = 0`` means a message is retried until it is delivered or the producer fails
(the worker's watchdog, not a timeout here, decides when waiting has lasted too long). Together they make a
successful delivery report of a batch's *last* record to a topic-partition proof that every earlier record to
it was delivered, so only that record carries a Python callback: one or two per batch instead of one per
message (measured: the per-message callback was the largest single cost of the old path).

Nothing here blocks the event loop. ``send`` produces what the local queue takes; on ``BufferError`` (the queue
is full: the broker is slow or away) the rest waits in a backlog that is retried shortly, ``has_room`` turns
False so that the pipeline stops taking input, and the order of everything sent is kept. A local refusal
(unknown topic or partition, a record over the producer's limit) and every delivery failure are fatal
(``OutputError``): the worker exits and the next owner recovers by read-back.

Record limits: ``max_message_bytes`` sizes the producer for the largest record it will be given (the largest
request the consumer accepts comes back as a dead letter), and ``batch_bytes`` keeps a batch of small records
under the output topics' own limit (a topic refuses a whole batch over its ``max.message.bytes``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamer.adapters.kafka_admin import client_config
from streamer.core.errors import OutputError
from streamer.core.kafka_faults import AUTHORIZATION, kind_of_code
from streamer.core.output_records import OutputRecords, TopicRecords

log = logging.getLogger(__name__)

Done = Callable[[BaseException | None], None]


class _ChosenSettingsFilter(logging.Filter):
    """librdkafka warns that ``enable.gapless.guarantee`` is experimental at every start; it is chosen on
    purpose (see the module docstring), so that one line is kept at debug level, not repeated as a warning. And its
    own FATAL lines are errors here: the worker says why it stops in its one CRITICAL line, with the exit code."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "enable.gapless.guarantee is experimental" in record.getMessage():
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return log.isEnabledFor(logging.DEBUG)
        if record.levelno > logging.ERROR:
            record.levelno, record.levelname = logging.ERROR, "ERROR"
        return True


# librdkafka's own log lines go through Python logging (served by the poll thread), so that they are JSON
# lines like every other when STREAMER_LOG_JSON is set, instead of raw text on stderr.
librdkafka_log = logging.getLogger("streamer.librdkafka")
librdkafka_log.addFilter(_ChosenSettingsFilter())


@dataclass(slots=True, eq=False)
class _Job:
    out: OutputRecords
    on_done: Done
    pending: int  # delivery reports still awaited (one per non-empty output topic)
    group: int = 0  # 0: predictions, 1: dead letters, 2: the challengers' predictions (shadow topic)
    cursor: int = 0  # next record of the current group to produce
    finished: bool = False


class KafkaOutputSink:
    """With ``transactional_id`` every output is written inside a transaction that is always open:
    ``commit_transaction`` commits it together with the consumer offsets, and opens the next one."""

    def __init__(
        self,
        bootstrap: str,
        client: dict[str, Any],
        *,
        predictions_topic: str,
        dlq_topic: str,
        shadow_topic: str | None = None,
        shadow_partitions: int = 0,
        max_message_bytes: int = 1_000_000,
        batch_bytes: int = 1_000_000,
        linger_ms: int = 5,
        transactional_id: str | None = None,
        retry_s: float = 0.002,
        max_commit_backlog: int = 256,
        on_queue_full: Callable[[], None] = lambda: None,
    ) -> None:
        self.predictions_topic = predictions_topic
        self.dlq_topic = dlq_topic
        # Without a shadow topic (it does not exist) challengers are still scored and evaluated, not written.
        self.shadow_topic = shadow_topic if shadow_partitions > 0 else None
        self._shadow_partitions = max(shadow_partitions, 1)
        # Tuning: defaults that a [kafka.client] setting of the same name replaces (queue size, batch size,
        # compression). What the guarantees rest on (idempotence, acks, the size limit, gapless delivery,
        # the callbacks) is not the user's to replace and is set over the passthrough.
        tuning: dict[str, Any] = {
            "batch.num.messages": 10_000,
            "batch.size": max(batch_bytes, 1),
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "none",
        }
        settings: dict[str, Any] = {
            "linger.ms": linger_ms,  # it has a setting of its own (kafka.linger_ms), which wins over the passthrough
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": max(max_message_bytes, 1000),
            "error_cb": self._on_error,
            "logger": librdkafka_log,
        }
        if transactional_id is not None:
            settings["transactional.id"] = transactional_id
        else:
            # Retry until delivered or fatal; transactions need a finite timeout (under transaction.timeout.ms).
            settings["enable.gapless.guarantee"] = True
            settings["message.timeout.ms"] = 0
        self._producer = Producer(client_config(bootstrap, {**tuning, **client}, **settings))
        self._on_queue_full = on_queue_full
        self.transactional = transactional_id is not None
        if self.transactional:
            # Fences an earlier producer with the same id and closes (aborts) the transaction it left open.
            self._producer.init_transactions(30)
            self._producer.begin_transaction()
            log.info("transactional producer %s ready", transactional_id)
        self._retry_s = retry_s
        self._committing = False  # a transaction commit is in progress: outputs wait in the backlog
        self._max_commit_backlog = max_commit_backlog
        self._backlog: deque[_Job] = deque()
        self._retry_scheduled = False
        self._reports: deque[tuple[_Job, KafkaError | None, Message]] = deque()
        self._reports_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_fatal: Callable[[BaseException], None] | None = None
        self._on_fault: Callable[[str], None] | None = None
        self._on_clear: Callable[[], None] | None = None
        self._faulted = False  # a refusal was reported and no output was delivered since
        self._running = True
        self._thread = threading.Thread(target=self._serve_callbacks, name="streamer-producer-poll", daemon=True)
        self._thread.start()

    def bind(self, loop: asyncio.AbstractEventLoop, on_fatal: Callable[[BaseException], None]) -> None:
        """Delivery reports and fatal errors are handed to ``loop``; ``on_fatal`` hears about the latter."""
        self._loop, self._on_fatal = loop, on_fatal

    # ------------------------------------------------------------------------------------------ sending

    def has_room(self) -> bool:
        """False while records wait for room in the producer's queue (backpressure); during a transaction
        commit up to ``max_commit_backlog`` batches may wait, so that scoring overlaps the commit."""
        if self._committing:
            return len(self._backlog) < self._max_commit_backlog
        return not self._backlog

    def send(self, out: OutputRecords, on_done: Done) -> None:
        """Write ``out`` after everything sent before; ``on_done(None)`` once all of it is delivered, or
        ``on_done(error)`` at the first failure. Called on the bound loop."""
        shadow = self.shadow_topic is not None and len(out.shadow) > 0
        job = _Job(out, on_done, int(len(out.predictions) > 0) + int(len(out.dead_letters) > 0) + int(shadow))
        if job.pending == 0:
            on_done(None)
            return
        if self._backlog or self._committing:
            self._backlog.append(job)
            self._schedule_retry()
        elif not self._produce(job):
            self._on_queue_full()  # counted once per output held back, not per retry
            self._backlog.append(job)
            self._schedule_retry()

    def _produce(self, job: _Job) -> bool:
        """Produce what the queue takes of ``job``; True when all of it is queued."""
        groups = (job.out.predictions, job.out.dead_letters, job.out.shadow)
        topics = (self.predictions_topic, self.dlq_topic, self.shadow_topic)
        produce = self._producer.produce
        while job.group < 3:
            records: TopicRecords = groups[job.group]
            topic = topics[job.group]
            if topic is None:
                job.group += 1
                continue
            partition = job.out.partition if job.group < 2 else job.out.partition % self._shadow_partitions
            keys, values, headers = records.keys, records.values, records.headers
            last = len(values) - 1
            i = job.cursor
            try:
                while i < last:
                    produce(topic, values[i], keys[i], partition, headers=headers[i])
                    i += 1
                if i == last:
                    produce(
                        topic, values[i], keys[i], partition, headers=headers[i], on_delivery=partial(self._report, job)
                    )
                    i += 1
            except BufferError:  # the local queue is full: the rest waits in the backlog (backpressure)
                job.cursor = i
                return False
            except KafkaException as exc:
                raise OutputError(
                    f"cannot write to {topic}[{partition}] ({len(values[i] or b'')} bytes): {exc.args[0]}",
                    topic=topic,
                    partition=partition,
                ) from None
            job.group += 1
            job.cursor = 0
        return True

    def _schedule_retry(self) -> None:
        if not self._retry_scheduled and self._loop is not None:
            self._retry_scheduled = True
            self._loop.call_later(self._retry_s, self._retry)

    def _retry(self) -> None:
        self._retry_scheduled = False
        if self._committing:
            return  # resumed when the commit is over
        try:
            while self._backlog:
                if not self._produce(self._backlog[0]):
                    self._schedule_retry()
                    return
                self._backlog.popleft()
        except OutputError as exc:
            self._fatal(exc)

    # ------------------------------------------------------------------------------------------ reports

    def _serve_callbacks(self) -> None:
        while self._running:
            try:
                self._producer.poll(0.05)
            except KafkaException as exc:  # the producer failed fatally (raised once its error callback ran)
                self._fatal(OutputError(f"the output producer failed: {exc.args[0] if exc.args else exc}"))
                return

    def _report(self, job: _Job, error: KafkaError | None, message: Message) -> None:
        """Producer thread. Reports are queued and handed to the loop in bulk (one wake-up per burst)."""
        self._reports.append((job, error, message))
        if not self._reports_scheduled and self._loop is not None:
            self._reports_scheduled = True
            self._loop.call_soon_threadsafe(self._drain_reports)

    def _drain_reports(self) -> None:
        self._reports_scheduled = False  # before draining: a report appended from now on schedules another drain
        reports = self._reports
        while reports:
            job, error, message = reports.popleft()
            if job.finished:
                continue
            if error is not None:
                job.finished = True
                job.on_done(
                    OutputError(
                        f"cannot deliver an output to {message.topic()}[{message.partition()}]: {error}",
                        topic=message.topic(),
                        partition=message.partition(),
                    )
                )
                continue
            job.pending -= 1
            if job.pending == 0:
                job.finished = True
                job.on_done(None)
                if self._faulted and self._on_clear is not None:
                    self._faulted = False
                    self._on_clear()

    def report_faults(self, on_fault: Callable[[str], None], on_clear: Callable[[], None]) -> None:
        """Refusals (authorization, authentication) go to ``on_fault(detail)`` from the poll thread, and the next
        delivered output clears them (``on_clear``, on the bound loop): a refusal of an idle worker's producer
        that never clears is a fault (``core.kafka_faults``); one with outputs pending fails their delivery."""
        self._on_fault, self._on_clear = on_fault, on_clear

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (poll thread): fatal errors stop the worker, refusals are faults, the rest
        are logged."""
        if error.fatal():
            self._fatal(OutputError(f"the output producer failed: {error}"))
            return
        log.warning("output producer: %s", error)
        code = error.code()
        if self._on_fault is not None and (code == KafkaError._AUTHENTICATION or kind_of_code(code) == AUTHORIZATION):
            self._faulted = True
            self._on_fault(error.str())

    def _fatal(self, error: BaseException) -> None:
        if self._on_fatal is None or self._loop is None:
            log.critical("%s", error)
            return
        self._loop.call_soon_threadsafe(self._on_fatal, error)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def commit_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout_s: float = 30.0
    ) -> None:
        """Commit the open transaction with ``offsets`` and open the next; called on the bound loop.

        The commit (a flush of what is in flight, then the transaction's round trips) runs on a thread so that
        the loop goes on scoring meanwhile; outputs released during it wait in the backlog and go into the next
        transaction -- nothing is produced while a commit is in progress. A transaction the broker aborted (its
        outputs discarded, its offsets not committed) or a fatal error (this producer was fenced by a newer
        instance) raises ``OutputError``: the worker exits and the next owner re-reads those requests."""
        assert self._loop is not None
        self._committing = True
        try:
            await self._loop.run_in_executor(None, self._commit_blocking, offsets, group_metadata, timeout_s)
        finally:
            self._committing = False
            if self._backlog:
                self._schedule_retry()

    def _commit_blocking(self, offsets: list[TopicPartition], group_metadata: Any, timeout_s: float) -> None:
        try:
            if offsets:
                self._producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
            self._producer.commit_transaction(timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.txn_requires_abort():
                # The ledgers already count the aborted outputs as delivered: going on would commit offsets past
                # requests whose outputs were discarded. Abort, then exit: the next owner reads back and
                # answers them (a read_committed read-back does not see aborted outputs).
                self._producer.abort_transaction(timeout_s)
                raise OutputError(f"transaction aborted ({error}); exiting so that the next owner re-reads") from None
            raise OutputError(f"transaction failed: {exc}") from None
        self._producer.begin_transaction()

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued output; returns how many are still undelivered."""
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> int:
        remaining = self.flush(timeout_s) + sum(
            len(job.out.predictions) + len(job.out.dead_letters) + len(job.out.shadow) for job in self._backlog
        )
        self._running = False
        self._thread.join(timeout=1.0)
        return remaining
