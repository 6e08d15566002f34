"""The Open Inference Protocol v2 (KServe v2 REST) over HTTP: ``streamer serve`` and a worker's ``oip_port``.

A ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive) on its own thread, the same on both engines: a request thread
parses the URL (``oip.routes``) and the body's protocol fields (``oip.codec``), hands the body to the
``OnDemandScorer`` (``oip.on_demand``: the stream's scoring path, concurrent requests in one micro-batch) and
answers in the protocol's JSON (``oip.responses``, from the prediction decoded by its declaration). Every
answer is counted in ``streamer_oip_requests_total{model,version,status}`` and timed in
``streamer_oip_request_duration_seconds{model}``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote

import msgspec

from streamer.core import outputs
from streamer.core.errors import TOO_LARGE, UNKNOWN_MODEL, DecodeError
from streamer.oip import codec as oip
from streamer.oip import responses, routes
from streamer.oip.on_demand import OnDemandScorer
from streamer.serving import ModelSet

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
JSON = "application/json"
IDLE_TIMEOUT_S = 30.0  # a connection silent this long (between or within requests) is closed
BINARY_HEADER = "Inference-Header-Content-Length"


class OipObserver(Protocol):
    def on_oip_request(self, model: str, version: str, status: int, seconds: float) -> None: ...


def output_infos(models: ModelSet, ref: str) -> list[responses.OutputInfo]:
    """A loaded model's outputs as ONNX Runtime reports them (a graph has none of its own)."""
    model = models.scorer.model(ref)
    if model is None:
        return []
    return [
        responses.OutputInfo(
            o.name, oip.ONNX_DATATYPES.get(o.type, "BYTES"), tuple(d if isinstance(d, int) else -1 for d in o.shape)
        )
        for o in model.session.get_outputs()
    ]


def _has_rules(models: ModelSet, ref: str) -> bool:
    spec = models.catalog.graphs.get(ref)
    return spec is not None and any(stage.kind == "rules" for stage in spec.stages.values())


class OipServer:
    def __init__(
        self,
        host: str,
        port: int,
        models: Callable[[], ModelSet],
        scorer: OnDemandScorer,
        ready: Callable[[], bool],
        observer: OipObserver | None = None,
        metrics_page: Callable[[], tuple[bytes, str]] | None = None,
        max_bytes: int = 1_048_576,
        server_version: str = "0",
    ) -> None:
        self._models, self._scorer, self._ready = models, scorer, ready
        self._observer, self._metrics_page, self._max_bytes = observer, metrics_page, max_bytes
        self._server_version = server_version
        self._datatypes: dict[tuple[str, int], dict[str, str]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            # A keep-alive connection idle (or trickling) this long is closed: a thread per connection must not
            # be held forever by clients that went quiet.
            timeout = IDLE_TIMEOUT_S

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_PUT(self) -> None:
                server._handle(self, "PUT")

            def do_DELETE(self) -> None:
                server._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:  # no log line per request
                pass

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """What http.server answers itself (a malformed request line or header) as the protocol's JSON."""
                body = oip.error_body(message or self.responses.get(code, ("error",))[0])
                self.close_connection = True
                try:
                    self.send_response(code, message)
                    self.send_header("Content-Type", JSON)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                        self.wfile.write(body)
                except OSError:
                    pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # many clients connect at once (the bench opens 64)

        self._server = Server((host, port), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="streamer-oip", daemon=True)

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{shown}:{self.port}"

    def start(self) -> None:
        self._scorer.start()
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._scorer.stop()

    # ------------------------------------------------------------------------------------------- requests

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        started = time.perf_counter()
        model, version = "", ""
        try:
            body = self._body(handler)
            # model names are directory names (no "/"): the whole path can be percent-decoded at once
            route = routes.route(method, unquote(handler.path.split("?", 1)[0]))
            model, version = route.model or "", str(route.version) if route.version is not None else ""
            status, payload, content_type, version = self._answer(route, body, handler, version)
        except oip.OipError as exc:
            status, payload, content_type = exc.status, exc.body(), JSON
        except Exception as exc:  # a bug: the protocol's 500, one log line with the traceback
            log.exception("OIP request %s %s failed", method, handler.path)
            status, payload, content_type = 500, oip.error_body(f"internal error: {exc!r}"), JSON
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client went away
            handler.close_connection = True
        if model and self._observer is not None:
            self._observer.on_oip_request(model, version, status, time.perf_counter() - started)

    def _body(self, handler: BaseHTTPRequestHandler) -> bytes:
        length_text = handler.headers.get("Content-Length")
        if length_text is None:
            if handler.command == "POST":
                handler.close_connection = True
                raise oip.OipError(411, "a request body needs Content-Length")
            return b""
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            handler.close_connection = True  # where the next request starts is unknown
            raise oip.OipError(400, f"Content-Length {length_text!r} is not a length")
        if length > self._max_bytes:
            handler.close_connection = True  # the body is not read: the connection cannot be reused
            raise oip.OipError.of(
                DecodeError(TOO_LARGE, f"the request has {length} bytes, over the limit of {self._max_bytes}")
            )
        return handler.rfile.read(length) if length > 0 else b""

    def _answer(
        self, route: routes.Route, body: bytes, handler: BaseHTTPRequestHandler, version: str
    ) -> tuple[int, bytes, str, str]:
        kind = route.kind
        if kind == "live":
            return 200, b'{"live":true}', JSON, version
        if kind == "ready":
            if not self._ready():
                raise oip.OipError(503, "not ready")
            return 200, b'{"ready":true}', JSON, version
        if kind == "server":
            return 200, _encode(responses.server_metadata(self._server_version)), JSON, version
        if kind == "metrics":
            if self._metrics_page is None:
                raise oip.OipError(404, "no endpoint /metrics here (the worker serves it on worker.metrics_port)")
            page, content_type = self._metrics_page()
            return 200, page, content_type, version
        assert route.model is not None
        models = self._models()
        versions = models.catalog.cards.get(route.model)
        if not versions:
            raise oip.OipError.of(DecodeError(UNKNOWN_MODEL, f"no model named {route.model!r}"))
        if route.version is not None and route.version not in versions:
            raise oip.OipError.of(
                DecodeError(UNKNOWN_MODEL, f"model {route.model!r} has no version {str(route.version)!r}")
            )
        serving = models.catalog.serving_version(route.model)
        shown = route.version if route.version is not None else serving
        if kind == "model":
            ref = f"{route.model}@{shown}"
            metadata = responses.model_metadata(
                route.model,
                versions,
                serving,
                route.version,
                output_infos(models, ref),
                _has_rules(models, ref),
            )
            return 200, _encode(metadata), JSON, str(shown)
        if kind == "model_ready":
            if not self._ready():
                raise oip.OipError(503, f"model {route.model!r} is loaded; the server is not ready")
            return 200, _encode({"name": route.model, "ready": True}), JSON, str(shown)
        if not self._ready():
            raise oip.OipError(503, "not ready")
        header_length = handler.headers.get(BINARY_HEADER)
        if header_length is not None:
            try:
                body = oip.from_binary(body, int(header_length))
            except ValueError:
                raise oip.OipError(400, f"{BINARY_HEADER} {header_length!r} is not a number") from None
        head = oip.check_head(body, self._max_bytes)
        answer = self._scorer.score(body, routes.model_string(route.model, route.version), head.key)
        if answer.error is not None:
            raise oip.OipError.of(answer.error)
        assert answer.body is not None
        prediction = outputs.decode(answer.body)
        datatypes = self._output_datatypes(models, prediction.model, int(prediction.version))
        response = responses.response_of(prediction, head.id, head.outputs, datatypes)
        return 200, responses.encode_infer_response(response), JSON, prediction.version

    def _output_datatypes(self, models: ModelSet, name: str, version: int) -> dict[str, str]:
        cached = self._datatypes.get((name, version))
        if cached is None:
            cached = {o.name: o.datatype for o in output_infos(models, f"{name}@{version}")}
            if len(self._datatypes) > 1000:
                self._datatypes.clear()
            self._datatypes[(name, version)] = cached
        return cached
