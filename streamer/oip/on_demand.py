"""On-demand requests scored by the stream's path, concurrent ones together in one micro-batch.

Each HTTP request body becomes one request record (its model string in the ``streamer-model`` header, as a
Kafka producer would set it; the routing key from the request's ``parameters.key``) and is scored by the same
``score(records) -> ScoredBatch`` the worker runs on a consumed batch: the same decode, features, graphs,
routing (pins, canary, shadow) and model set. What comes back for the row is its prediction body or its
dead-letter reason.

Batching: the HTTP server hands each record to one batching thread (``submit``) and awaits the future it gets
back (``score`` waits on it, for a caller on a thread of its own). The thread feeds a
``core.batching.Batcher`` with the worker's policy (``batch_max_size``, ``batch_max_wait_ms``,
``batch_close_when_drained``): while a batch is being scored, the requests that arrive queue up, and the next
batch takes all of them (up to ``batch_max_size``) in one scoring call, one ONNX call per model version. With
``batch_close_when_drained`` (the default) a lone request never waits for batch-mates that are not coming;
``batch_max_wait_ms`` bounds the wait otherwise. One batch is scored at a time. (Scoring a lone request on its
own thread when nothing is queued saves the hand-off at one client, but measured it halves the batching at
eight: not done.) ``batch_max_size = 1`` turns batching off: each request is
scored alone on a thread of a pool (ONNX Runtime runs concurrent calls in parallel).

A future may be cancelled while it waits (its HTTP request timed out or its client went away): the answer is
then dropped, and the batching thread goes on.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from streamer.core import envelope
from streamer.core.batching import Batcher, BatchPolicy
from streamer.core.errors import SCORING_FAILED, DecodeError
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Records
from streamer.oip.codec import OipError

log = logging.getLogger(__name__)

# The topic and partition of on-demand requests in their records (a prediction without a request id is
# ``oip:0:<n>``, n counting the server's requests).
TOPIC = "oip"


@dataclass(frozen=True, slots=True)
class Answer:
    """A request's prediction (its JSON body, closed) or its dead-letter reason."""

    body: bytes | None
    error: DecodeError | None


Score = Callable[[Records], ScoredBatch]
_Request = tuple[int, bytes, str, bytes | None]  # offset, body, model string, key
_Queued = tuple[tuple[bytes, str, bytes | None], Future[Answer]]
BatchObserver = Callable[[int, float], None]  # (requests in the batch, seconds to score it)


class OnDemandScorer:
    def __init__(self, score: Score, policy: BatchPolicy, on_batch: BatchObserver | None = None) -> None:
        self._score, self.policy, self._on_batch = score, policy, on_batch
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._offsets = itertools.count()  # next() on a count is atomic: offsets are unique
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None  # batching off: one request per call, on these threads
        self._stopped = threading.Event()

    @property
    def batching(self) -> bool:
        return self.policy.max_size > 1

    def start(self) -> None:
        if self.batching:
            self._thread = threading.Thread(target=self._run, name="streamer-oip-batch", daemon=True)
            self._thread.start()
        else:
            self._pool = ThreadPoolExecutor(thread_name_prefix="streamer-oip-score")

    def stop(self) -> None:
        """Stop batching; requests still queued or in the open batch are answered 503 at once, not left to
        wait out their timeout."""
        self._stopped.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=False)  # a request being scored alone finishes; nothing waits on it here
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                _settle(item[1], error=OipError(503, "the server is stopping"))

    def submit(self, body: bytes, model: str, key: bytes | None = None) -> Future[Answer]:
        """Queue one request body for ``model`` (a model string); the future is its answer once its batch is
        scored (``OipError`` 503 when the scorer stops first)."""
        if self._stopped.is_set():
            raise OipError(503, "the server is stopping")
        if self._pool is not None:
            return self._pool.submit(self._one, body, model, key)
        future: Future[Answer] = Future()
        if self.batching:
            self._queue.put(((body, model, key), future))
        else:  # never started: scored on the caller's thread
            future.set_result(self._one(body, model, key))
        return future

    def _one(self, body: bytes, model: str, key: bytes | None) -> Answer:
        return self._answers(_records([(next(self._offsets), body, model, key)]))[0]

    def score(self, body: bytes, model: str, key: bytes | None = None, timeout_s: float = 60.0) -> Answer:
        """``submit``, then wait for the answer; ``OipError`` 503 when it is not scored within ``timeout_s``."""
        try:
            return self.submit(body, model, key).result(timeout_s)
        except FutureTimeout:  # the scorer is overloaded or stuck: unavailable, not a bug of this request
            raise OipError(503, f"not scored within {timeout_s:g} s") from None

    def _run(self) -> None:
        batcher = Batcher(self.policy)
        waiting: list[Future[Answer]] = []
        while not self._stopped.is_set():
            deadline = batcher.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is None and self._stopped.is_set():
                for future in waiting:  # the open batch: never scored
                    _settle(future, error=OipError(503, "the server is stopping"))
                break
            closed = self._take(item, batcher, waiting)
            last = batcher.poll(time.monotonic(), drained=self._queue.empty())
            if last is not None:
                closed.append(last)
            for batch in closed:
                futures, waiting = waiting[: len(batch)], waiting[len(batch) :]
                try:
                    answers = self._answers(batch)
                except Exception as exc:  # a bug, not bad input: every request of the batch learns it
                    log.exception("on-demand batch failed")
                    answers = [Answer(None, DecodeError(SCORING_FAILED, repr(exc)))] * len(batch)
                for future, answer in zip(futures, answers, strict=True):
                    _settle(future, answer)

    def _take(self, item: _Queued | None, batcher: Batcher, waiting: list[Future[Answer]]) -> list[Records]:
        """Add ``item`` and everything queued to the open batch; the batches that filled up."""
        closed: list[Records] = []
        while True:
            if item is None:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return closed
            if item is None:  # stop
                self._queue.put(None)
                return closed
            (body, model, key), future = item
            waiting.append(future)  # offsets are given here, in queue order: they increase along a batch
            closed += batcher.add(_records([(next(self._offsets), body, model, key)]), time.monotonic())
            item = None

    def _answers(self, records: Records) -> list[Answer]:
        started = time.perf_counter()
        scored = self._score(records)
        if self._on_batch is not None:
            self._on_batch(len(records), time.perf_counter() - started)
        answers = []
        for row, body in enumerate(scored.bodies):
            if body is not None:
                answers.append(Answer(body + b"}", None))
            else:
                error = scored.errors.get(row) or DecodeError(SCORING_FAILED, "no prediction was produced")
                answers.append(Answer(None, error))
        return answers


def _settle(future: Future[Answer], answer: Answer | None = None, error: BaseException | None = None) -> None:
    """Give ``future`` its answer or error, unless its waiter gave up on it (cancelled) in the meantime."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(answer)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


def _records(requests: list[_Request]) -> Records:
    now_ms = int(time.time() * 1000)
    return Records(
        TOPIC,
        0,
        [offset for offset, _, _, _ in requests],
        [key for _, _, _, key in requests],
        [body for _, body, _, _ in requests],
        [now_ms] * len(requests),
        [envelope.model_header(model) for _, _, model, _ in requests],
    )
