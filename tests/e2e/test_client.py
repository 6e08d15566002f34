"""``streamer.client`` against a real worker: one worker and one client for the module, as a user has them.

The client is built right before its first call, so the first test also shows that it is positioned before
it sends (a fast answer is not missed). One engine is enough: the client sees only topics, and both engines
write the same records (tests/e2e/test_scoring_path.py holds them to one contract).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamer import synthetic
from streamer.adapters import devstack
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.cli import app
from streamer.client import DeadLetter, Prediction, Request, ScoreTimeout, ScoringClient
from streamer.core.errors import StreamerError
from streamer.top.terminal import scrape
from streamer.top.view import build_view
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess

pytestmark = pytest.mark.e2e

ROWS = synthetic.transactions(400, seed=11)


def features(index: int) -> dict[str, float]:
    return synthetic.features_of(ROWS[index % len(ROWS)])


@dataclass
class Served:
    topics: Topics
    worker: WorkerProcess
    client: ScoringClient
    bootstrap: str


@pytest.fixture(scope="module")
def served(kafka_broker: devstack.ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    token = uuid.uuid4().hex[:8]
    topics = Topics(*(f"client-{kind}-{token}" for kind in ("req", "pred", "fb", "dlq", "grp")))
    names = [topics.requests, topics.predictions, topics.feedback, topics.dlq]
    KafkaAdmin(kafka_broker.address).create_topics(names, 4)
    workdir = tmp_path_factory.mktemp("client-worker")
    settings = {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_MODELS_DIR": str(REPO / "models"),
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_STATE_DIR": str(workdir / "state"),
        "STREAMER_ENGINE": "batch",
        **topics.env(),
    }
    log_path = workdir / "worker.log"
    worker = WorkerProcess(devstack.start_worker(workdir, log_path, settings), log_path)
    client = None
    try:
        worker.wait_assigned()
        client = ScoringClient(
            kafka_broker.address,
            requests_topic=topics.requests,
            predictions_topic=topics.predictions,
            dlq_topic=topics.dlq,
            timeout_s=20.0,
        )
        yield Served(topics, worker, client, kafka_broker.address)
    finally:
        if client is not None:
            client.close()
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def test_one_request_gets_its_prediction(served: Served) -> None:
    prediction = served.client.score(features(0), key="card-1", id="first-request")
    assert isinstance(prediction, Prediction)
    assert prediction.id == "first-request"
    assert (prediction.model, prediction.version) == ("fraud", "1")
    assert 0.0 <= prediction.score <= 1.0 and prediction.label in (0, 1)
    assert prediction.source is not None and prediction.source.topic == served.topics.requests
    assert prediction.latency_ms is not None and prediction.latency_ms >= 0
    generated = served.client.score(features(1), key=b"card-2", model="fraud@1")
    assert generated.id and generated.id != "first-request"


def test_many_requests_answered_in_order_with_dead_letters_in_place(served: Served) -> None:
    requests: list[Request | dict] = [Request(features(i), key=f"card-{i % 7}", id=f"many-{i}") for i in range(150)]
    requests.insert(40, Request({"amount": "a lot"}, key="card-bad", id="many-bad"))
    requests.append(features(151))  # a bare features mapping: id generated
    outcomes = served.client.score_many(requests)
    assert len(outcomes) == len(requests)
    bad = outcomes.pop(40)
    assert isinstance(bad, DeadLetter) and bad.reason == "schema" and bad.id == "many-bad"
    assert all(isinstance(o, Prediction) for o in outcomes)
    assert [o.id for o in outcomes[:150]] == [f"many-{i}" for i in range(150)]
    # each answer is its own request's: the scores equal those of the same features asked one at a time
    again = served.client.score(features(17), key="card-3")
    assert again.score == pytest.approx(outcomes[17].score)


def test_asyncio_calls_share_one_consumer(served: Served) -> None:
    async def main() -> tuple[list[Prediction], list]:
        singles = asyncio.gather(
            *(served.client.ascore(features(i), key=f"card-{i}", id=f"async-{i}") for i in range(40))
        )
        batch = served.client.ascore_many([Request(features(i), id=f"async-many-{i}") for i in range(60)])
        return await asyncio.gather(singles, batch)

    started = time.monotonic()
    singles, batch = asyncio.run(main())
    assert [p.id for p in singles] == [f"async-{i}" for i in range(40)]
    assert [p.id for p in batch] == [f"async-many-{i}" for i in range(60)]
    assert time.monotonic() - started < 20


def test_a_bad_request_raises_a_typed_dead_letter(served: Served) -> None:
    with pytest.raises(DeadLetter) as caught:
        served.client.score(features(2), key="card-9", model="no-such-model", id="dead-1")
    dead = caught.value
    assert (dead.id, dead.reason) == ("dead-1", "unknown-model")
    assert "no-such-model" in dead.detail
    assert dead.source is not None and dead.source.topic == served.topics.requests and dead.offset >= 0
    assert dead.key == b"card-9" and b'"dead-1"' in dead.value

    async def schema() -> None:
        await served.client.ascore({"amount": [1, 2]}, id="dead-2")

    with pytest.raises(DeadLetter, match="schema"):
        asyncio.run(schema())


def test_no_worker_on_the_topic_times_out(served: Served, tmp_path: Path) -> None:
    unserved = f"client-unserved-{uuid.uuid4().hex[:8]}"
    KafkaAdmin(served.bootstrap).create_topics([unserved], 1)
    with ScoringClient(
        served.bootstrap,
        requests_topic=unserved,
        predictions_topic=served.topics.predictions,
        dlq_topic=served.topics.dlq,
    ) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            client.score(features(3), id="lonely", timeout_s=1.0)
        assert 1.0 <= time.monotonic() - started < 5.0
        assert isinstance(caught.value, ScoreTimeout) and caught.value.missing == ["lonely"]

        async def late() -> None:
            await client.ascore_many([features(4), features(5)], timeout_s=0.5)

        with pytest.raises(ScoreTimeout) as many:
            asyncio.run(late())
        assert len(many.value.missing) == 2 and many.value.results == [None, None]


def test_top_shows_the_clients_traffic_on_the_live_worker(served: Served) -> None:
    """``streamer top --once`` on the worker's real /metrics: its requests, dead letters and latency."""
    outcomes = served.client.score_many([features(i) for i in range(20)] + [{"amount": "x"}])
    assert isinstance(outcomes[-1], DeadLetter)
    match = re.search(r"metrics: (http://\S+/metrics)", served.worker.log())
    assert match, "the worker did not print its metrics address"
    url = match.group(1)
    deadline = time.monotonic() + 10
    while True:  # the worker counts a batch once its outputs are delivered: shortly after the client has them
        view = build_view(None, [scrape(url)])
        fraud = next((r for r in view.requests if (r.model, r.version) == ("fraud", "1")), None)
        reasons = {d.reason: d.total for d in view.dead_letters}
        if (fraud is not None and fraud.predictions_total >= 20 and reasons.get("schema", 0) >= 1) or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.1)
    assert fraud is not None and fraud.predictions_total >= 20 and reasons["schema"] >= 1
    end_to_end = next(row for row in view.latencies if row.name == "end to end")
    assert end_to_end.count >= 20 and end_to_end.quantiles[0] is not None
    assert view.workers[0].up and view.workers[0].partitions == 4

    result = CliRunner().invoke(app, ["top", "--once", "--interval", "0.2", url])
    assert result.exit_code == 0, result.output
    assert "1/1 worker(s) up" in result.output and "schema" in result.output and "end to end" in result.output


def test_the_readme_example_runs(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's example, as written, against this module's worker (settings from STREAMER_*)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## From Python: `streamer.client`") :]
    code = section[section.index("```python\n") + len("```python\n") : section.index("```\n", 10)]
    monkeypatch.chdir(REPO / "tests")  # no streamer.toml here: the environment alone
    monkeypatch.setenv("STREAMER_KAFKA_BOOTSTRAP", served.bootstrap)
    for variable, value in served.topics.env().items():
        monkeypatch.setenv(variable, value)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[1:3] == ["fraud", "1"]
    assert printed[1].startswith("schema ")
    assert [type(a).__name__ for a in namespace["answers"]] == ["Prediction", "Prediction"]


def test_a_missing_topic_fails_the_constructor_in_one_line(served: Served) -> None:
    with pytest.raises(StreamerError, match=r"^topic client-absent-\w+ does not exist \(create it"):
        ScoringClient(served.bootstrap, requests_topic=f"client-absent-{uuid.uuid4().hex[:6]}")
