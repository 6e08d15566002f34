"""``streamer top --once``: one frame scraped over HTTP from a local server serving what a worker's
``WorkerMetrics`` exposes, and from an address where nobody listens."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from streamer.cli import app
from tests.unit.test_top import worker_exposition


@pytest.fixture
def metrics_server() -> Iterator[str]:
    """A worker's exposition over HTTP; every scrape sees 50 more predictions than the one before."""
    scrapes = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            scrapes[0] += 1
            body = worker_exposition(50 * scrapes[0], 3, [0.003] * (20 * scrapes[0]), {"0": 7})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


def test_top_once_prints_one_frame_of_every_section(metrics_server: str) -> None:
    result = CliRunner().invoke(app, ["top", "--once", "--interval", "0.2", metrics_server, "127.0.0.1:1"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "1/2 worker(s) up" in text and "rates over the last" in text
    assert "Connection refused" in text or "refused" in text.lower()
    fraud = next(line for line in text.splitlines() if line.split()[:2] == ["fraud", "1"] and "," not in line)
    assert fraud.split()[4] == "100"  # the second scrape's total predictions
    assert float(fraud.split()[2]) > 0  # a rate over the interval
    assert "end to end" in text and "schema" in text and "0.900" in text


def test_top_once_exits_1_when_no_worker_answers() -> None:
    result = CliRunner().invoke(app, ["top", "--once", "--interval", "0.05", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "0/1 worker(s) up" in result.output
