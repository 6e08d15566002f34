"""The OIP server's bounds on real sockets: a body over the limit refused unread, a full scoring queue and a
full house of busy connections answered 503 at once, idle connections evicted for new ones and closed after the
idle timeout, keep-alive kept; and a flood of 2,000 silent connections against ``streamer serve`` that does not
stop it answering a real request.

The in-process servers score with a stand-in score function (no ONNX). To keep requests in progress as long as
a test needs, whatever the machine's load, a server can hold its batches open (a two-minute batch deadline,
never reached): the held requests are then answered 503 by the server's stop. Waits are bounded polls of the
server's own counts, never sleeps sized for a fast machine.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import resource
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton

from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.core.batching import BatchPolicy
from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import REASONS, TOO_LARGE
from streamer.core.routing import Catalog
from streamer.core.scoring import ScoredBatch
from streamer.core.types import Records
from streamer.oip.http import OipServer
from streamer.oip.on_demand import OnDemandScorer
from streamer.serving import ModelSet
from tests.conftest import REPO, ServeProcess

CARD = ModelCard("m", 1, "binary-classification", ("a", "b"), "x", "0" * 64, OutputRef("probabilities", 1), None)
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}).encode()
BOUND_S = 30.0  # generous: these waits end as soon as the condition holds


class NoSessions:
    """The ONNX side of the model set: no session (the stand-in score needs none)."""

    def model(self, ref: str) -> None:
        return None


def score(records: Records) -> ScoredBatch:
    """Every row's prediction: a fixed one."""
    body = (
        b'{"id":"r","model":"m","version":"1","score":0.5,"label":null,"outputs":{},'
        b'"source":{"topic":"oip","partition":0,"offset":0}'
    )
    return ScoredBatch(records, [body] * len(records), {})


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND_S} s: {what}"
        time.sleep(0.01)


@pytest.fixture
def make_server() -> Iterator[Callable[..., tuple[OipServer, WorkerMetrics]]]:
    started: list[OipServer] = []

    def make(hold: bool = False, **bounds: float) -> tuple[OipServer, WorkerMetrics]:
        """A started server; ``hold``: its batches stay open (requests stay in progress until it stops)."""
        metrics = WorkerMetrics()
        models = ModelSet(Catalog({"m": {1: CARD}}), NoSessions())  # type: ignore[arg-type]
        policy = BatchPolicy(64, 120.0, close_when_drained=False) if hold else BatchPolicy(64, 0.001)
        scorer = OnDemandScorer(score, policy, metrics.on_oip_batch)
        server = OipServer("127.0.0.1", 0, lambda: models, scorer, lambda: True, metrics, **bounds)  # type: ignore[arg-type]
        server.start()
        started.append(server)
        return server, metrics

    yield make
    for server in started:
        server.stop()


def infer(server: OipServer, timeout_s: float = BOUND_S) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout_s)
    try:
        connection.request("POST", "/v2/models/m/infer", BODY, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def read_answer(sock: socket.socket) -> tuple[int, bytes, bool]:
    """(status, body, closed afterwards) of one answer read from a raw socket."""
    sock.settimeout(BOUND_S)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    closed = True
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return int(head.split()[1]), body, closed


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (an end of stream or a reset is waiting); poll, not select: the flood's
    file descriptors go past select's 1,024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def open_sockets(pid: int) -> int:
    """Sockets the process holds (its connections, its listening socket and a few of its own)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            count += os.readlink(fd).startswith("socket:")
    return count


def test_a_body_over_the_limit_is_refused_before_it_is_read_and_the_connection_closed(make_server) -> None:
    server, _ = make_server(max_bytes=1000)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n{")
        status, body, closed = read_answer(sock)  # answered although 49,999,999 bytes never come
    assert status == REASONS[TOO_LARGE].http_status == 413
    assert json.loads(body)["error"].startswith("too-large: the request has 50000000 bytes")
    assert closed, "an unread body leaves the connection unusable: it is closed"


def test_a_full_scoring_queue_is_a_503_at_once_and_stopping_answers_the_queued(make_server) -> None:
    server, metrics = make_server(hold=True, max_queued=2)
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(infer, server) for _ in range(2)]
        wait_until(lambda: server.queued == 2, "two requests wait for scoring")
        status, body = infer(server)
        assert status == 503 and body["error"].startswith("the scoring queue is full (2 requests wait")
        server.stop()
        answers = [f.result(BOUND_S) for f in held]
    assert answers == [(503, {"error": "the server is stopping"})] * 2
    page = metrics.exposition().decode()
    assert 'streamer_oip_requests_total{model="m",status="503",version=""} 3.0' in page


def test_past_the_connection_cap_the_idle_are_evicted_and_when_all_are_busy_a_503(make_server) -> None:
    server, metrics = make_server(hold=True, max_connections=3)
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    wait_until(lambda: server.connections.open == 3, "three silent connections open")
    with ThreadPoolExecutor(3) as pool:
        held: list[Future] = []
        for n in range(3):  # each new connection takes the place of a silent one
            held.append(pool.submit(infer, server))
            wait_until(lambda n=n: len(server.connections.busy) == n + 1, f"{n + 1} requests in progress")
        assert all(closed_by_server(s) for s in silent), "the silent connections were closed for the new ones"
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body, closed = read_answer(sock)
        assert status == 503 and closed and json.loads(body)["error"].startswith("at capacity: all 3 connections")
        server.stop()
        assert [f.result(BOUND_S)[0] for f in held] == [503, 503, 503]
    page = metrics.exposition().decode()
    assert 'streamer_oip_connections_closed_total{cause="evicted"} 3.0' in page
    assert 'streamer_oip_connections_closed_total{cause="at-capacity"} 1.0' in page
    for sock in silent:
        sock.close()


def test_keep_alive_reuses_a_connection_and_idle_ones_are_closed_after_the_timeout(make_server) -> None:
    server, _ = make_server(idle_timeout_s=1.0)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=BOUND_S)
    for _ in range(3):
        connection.request("POST", "/v2/models/m/infer", BODY)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["model_name"] == "m"
    assert server.connections.open == 1, "three requests, one connection"
    wait_until(lambda: server.connections.open == 0, "the keep-alive connection closed once idle")
    connection.close()
    never_spoke = socket.create_connection(("127.0.0.1", server.port))
    wait_until(lambda: closed_by_server(never_spoke), "a connection that never sent anything closed")
    never_spoke.close()
    with socket.create_connection(("127.0.0.1", server.port)) as trickle:
        trickle.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        status, body, closed = read_answer(trickle)
    assert status == 408 and closed and "did not arrive within 1 s" in json.loads(body)["error"]


def test_a_malformed_request_is_a_400_without_an_error_log(make_server, caplog: pytest.LogCaptureFixture) -> None:
    server, _ = make_server()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        status, _, closed = read_answer(sock)
    assert status == 400 and closed
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_two_thousand_silent_connections_do_not_stop_streamer_serve_answering(tmp_path) -> None:
    """The default cap (512): the silent sockets past it take each other's places, a real request takes the
    place of one of them and is answered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2_500
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"this test needs {needed} open files (hard {hard})"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud" / "1", models / "fraud" / "1")
    environ = {"PATH": "/usr/bin:/bin", "STREAMER_MODELS_DIR": str(models)}
    environ |= {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}  # the checkout under test
    serving = ServeProcess(tmp_path, environ, start_timeout_s=60)
    silent: list[socket.socket] = []
    try:
        address = serving.address
        host, port = address.rsplit(":", 1)
        for _ in range(2_000):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((host, int(port)))
            silent.append(sock)
        rows = np.ones((1, 6), dtype=np.float32)
        tensor = triton.InferInput("float_input", [1, 6], "FP32")
        tensor.set_data_from_numpy(rows, binary_data=False)
        started = time.monotonic()
        client = triton.InferenceServerClient(address, connection_timeout=BOUND_S, network_timeout=BOUND_S)
        result = client.infer("fraud", [tensor])
        answered_s = time.monotonic() - started
        assert result.as_numpy("score").shape == (1,) and result.get_response()["model_version"] == "1"
        assert answered_s < BOUND_S
        wait_until(lambda: open_sockets(serving.process.pid) <= 512 + 8, "the server keeps at most 512 connections")
        assert serving.process.poll() is None
        print(f"answered {answered_s:.2f} s after 2,000 silent connections")
    finally:
        for sock in silent:
            sock.close()
        assert serving.stop(30) == 0, serving.log()[-3000:]
