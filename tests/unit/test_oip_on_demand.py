"""``services.on_demand.OnDemandScorer``: concurrent requests scored together, each answered with its own row."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from streamer.core.batching import BatchPolicy
from streamer.core.errors import SCHEMA, DecodeError
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Records
from streamer.oip.on_demand import OnDemandScorer


class SlowEcho:
    """A score function that answers each body with itself (or a schema error for b"bad") and records batches."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()

    def __call__(self, records: Records) -> ScoredBatch:
        self.gate.wait(5)  # the first batch waits until the others have queued
        self.batches.append(len(records))
        bodies: list[bytes | None] = []
        errors = {}
        for row, (value, headers) in enumerate(zip(records.values, records.headers, strict=True)):
            assert headers == [("streamer-model", b"m@1")] and records.topic == "oip"
            if value == b"bad":
                bodies.append(None)
                errors[row] = DecodeError(SCHEMA, "bad")
            else:
                bodies.append(b'{"echo":"%s"' % value)
        return ScoredBatch(records, bodies, errors)


def test_concurrent_requests_share_a_batch_and_get_their_own_answers() -> None:
    echo = SlowEcho()
    scorer = OnDemandScorer(echo, BatchPolicy(64, 0.005))
    scorer.start()
    try:
        bodies = [b"r%d" % i for i in range(40)] + [b"bad"]
        with ThreadPoolExecutor(41) as pool:
            futures = [pool.submit(scorer.score, body, "m@1") for body in bodies]
            threading.Timer(0.2, echo.gate.set).start()
            answers = [f.result(10) for f in futures]
    finally:
        scorer.stop()
    for body, answer in zip(bodies[:-1], answers[:-1], strict=True):
        assert answer.body == b'{"echo":"%s"}' % body and answer.error is None
    assert answers[-1].body is None and answers[-1].error == DecodeError(SCHEMA, "bad")
    assert sum(echo.batches) == 41 and len(echo.batches) < 41 and max(echo.batches) <= 64


def test_batch_max_size_one_scores_each_request_on_its_own_thread() -> None:
    echo = SlowEcho()
    echo.gate.set()
    scorer = OnDemandScorer(echo, BatchPolicy(1, 0.005))
    scorer.start()
    assert not scorer.batching
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: scorer.score(b"x%d" % i, "m@1"), range(20)))
    scorer.stop()
    assert [a.body for a in answers] == [b'{"echo":"x%d"}' % i for i in range(20)]
    assert echo.batches == [1] * 20


def test_a_scorer_that_does_not_answer_in_time_is_a_503_and_stopping_answers_what_waits() -> None:
    """Unavailable, not a bug: a request not scored within its bound, and one still queued or in the open batch
    when the server stops, get the protocol's 503 at once instead of a 500 or a hang."""
    import pytest

    from streamer.oip.codec import OipError

    echo = SlowEcho()  # its gate stays shut: the first batch is held in the scorer
    scorer = OnDemandScorer(echo, BatchPolicy(2, 60.0))
    scorer.start()
    with pytest.raises(OipError) as timed_out:
        scorer.score(b"r0", "m@1", timeout_s=0.2)
    assert timed_out.value.status == 503
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(scorer.score, b"r1", "m@1")  # the open batch, never closed by size or deadline
        threading.Timer(0.3, scorer.stop).start()
        with pytest.raises(OipError) as stopped:
            waiting.result(10)
    assert stopped.value.status == 503
    with pytest.raises(OipError):
        scorer.score(b"r2", "m@1")
    echo.gate.set()
