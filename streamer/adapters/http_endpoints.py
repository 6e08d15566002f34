"""``/metrics``, ``/health`` and ``/ready`` over plain HTTP, for the engine that runs without Faust's web server.

A ``ThreadingHTTPServer`` on its own thread: the scrape never waits for the event loop, and the event loop never
serves HTTP. ``/health`` is liveness (the process answers); ``/ready`` answers what ``ready()`` says (status and
JSON body: the engines' shared ``Readiness``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


class Endpoints:
    def __init__(
        self,
        port: int,
        metrics_page: Callable[[], bytes],
        metrics_content_type: str,
        ready: Callable[[], tuple[int, dict[str, Any]]],
        host: str = "127.0.0.1",  # worker.metrics_host; all interfaces only where configured (the container)
    ) -> None:
        def respond(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path == "/metrics":
                    respond(self, 200, metrics_page(), metrics_content_type)
                elif path == "/health":
                    respond(self, 200, b'{"status": "ok"}', "application/json")
                elif path == "/ready":
                    status, body = ready()
                    respond(self, status, json.dumps(body).encode(), "application/json")
                else:
                    respond(self, 404, b"not found\n", "text/plain")

            def log_message(self, format: str, *args: Any) -> None:  # no log line per scrape
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamer-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
