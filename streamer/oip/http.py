"""The Open Inference Protocol v2 (KServe v2 REST) over HTTP: ``streamer serve`` and a worker's ``oip_port``.

An aiohttp low-level server (HTTP/1.1, keep-alive) on an event loop of its own, run by a thread of its own: the
engines run their own loops, and this one never shares them, so a burst of HTTP never delays a Kafka batch and
the reverse. Per request, on that loop: the body and the URL are read and the body's protocol fields parsed
(``oip.codec``); the body goes to the ``OnDemandScorer`` (the stream's scoring path: concurrent requests in one
micro-batch, scored on this loop); the answer is written in the protocol's JSON.
Every answer to a request that names a model is counted in ``streamer_oip_requests_total{model,version,status}``
and timed in ``streamer_oip_request_duration_seconds{model}``, from the request read to the answer written.

Bounds, each answered at once rather than by waiting:

- **connections**: at most ``max_connections`` open (``oip.connections``): past the cap, the one idle the
  longest is closed for the new one; when every open connection has a request in progress, the new one gets a
  503 with the protocol's error body and is closed. Both are counted in
  ``streamer_oip_connections_closed_total{cause}`` (``evicted``, ``at-capacity``).
- **idle**: a connection with no request in progress for ``idle_timeout_s`` is closed (aiohttp's keep-alive
  timer, which also runs from the connection's start); a body that does not arrive whole in that time is a 408.
- **queue**: at most ``max_queued`` requests wait for (or are in) scoring; one more is a 503.
- **body**: a ``Content-Length`` over ``max_bytes`` is refused before the body is read (the status of the
  ``too-large`` reason) and its connection closed: an unread body cannot be skipped. A POST without
  ``Content-Length`` is a 411.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import unquote

import msgspec
from aiohttp import web

from streamer.config import WorkerSettings
from streamer.core import outputs
from streamer.core.errors import TOO_LARGE, UNKNOWN_MODEL, DecodeError
from streamer.oip import codec as oip
from streamer.oip import responses, routes
from streamer.oip.connections import LINGER_S, ClientErrors, Connections, ConnectionServer, Refused
from streamer.oip.on_demand import Answer, OnDemandScorer
from streamer.serving import ModelSet

log = logging.getLogger(__name__)
_SETTINGS = WorkerSettings()  # the defaults of the bounds: worker.oip_max_connections, worker.oip_max_queued

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
JSON = "application/json"
BINARY_HEADER = "Inference-Header-Content-Length"
IDLE_TIMEOUT_S = 30.0  # a connection without a request in progress this long is closed
BACKLOG = 1024  # connections the kernel holds before they are accepted (the bench opens 64 at once)


class OipObserver(Protocol):
    def on_oip_request(self, model: str, version: str, status: int, seconds: float) -> None: ...

    def on_oip_connection_closed(self, cause: str) -> None: ...


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


def _optional_fields(models: ModelSet, ref: str) -> frozenset[str]:
    """The optional prediction fields a model's answers carry: a declared graph's (``GraphSpec.optional_fields``)."""
    spec = models.catalog.graphs.get(ref)
    return spec.optional_fields() if spec is not None else frozenset()


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
        *,
        max_connections: int = _SETTINGS.oip_max_connections,
        max_queued: int = _SETTINGS.oip_max_queued,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._models, self._scorer, self._ready = models, scorer, ready
        self._observer, self._metrics_page, self._max_bytes = observer, metrics_page, max_bytes
        self._server_version = server_version
        self._max_connections, self._max_queued, self._idle_timeout_s = max_connections, max_queued, idle_timeout_s
        self._datatypes: dict[tuple[str, int], dict[str, str]] = {}
        self.connections = Connections()
        self._queued = 0  # requests waiting for or in scoring (the loop's own count: no lock)
        body = oip.error_body(
            f"at capacity: all {max_connections} connections have a request in progress "
            "(worker.oip_max_connections); retry later"
        )
        self._at_capacity = (
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        # Bound now, so that the port is known (and taken) before start().
        self._socket = socket.create_server((host, port), backlog=BACKLOG)
        self.host = host
        self.port = self._socket.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="streamer-oip", daemon=True)
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._web: ConnectionServer | None = None
        self._listener: asyncio.Server | None = None

    @property
    def url(self) -> str:
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{shown}:{self.port}"

    @property
    def queued(self) -> int:
        """Requests waiting for or in scoring now."""
        return self._queued

    def start(self) -> None:
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def stop(self) -> None:
        """No new connection; requests queued for scoring answered 503 at once; the answers in progress
        written (up to 2 s), then every connection closed and the loop ended."""
        if not self._thread.is_alive():
            self._socket.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(15)
        except Exception as exc:  # stopping goes on: the process is ending
            log.warning("the OIP server did not close cleanly: %r", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
        except BaseException as exc:
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _open(self) -> None:
        self._web = ConnectionServer(
            self._handle,
            self.connections,
            keepalive_timeout=self._idle_timeout_s,
            lingering_time=LINGER_S,
            access_log=None,
            logger=ClientErrors(log, {}),
        )
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._connection, sock=self._socket, backlog=BACKLOG)

    async def _close(self) -> None:
        assert self._listener is not None and self._web is not None
        self._listener.close()
        self._scorer.stop()
        await self._web.shutdown(2.0)

    def _connection(self) -> asyncio.BaseProtocol:
        """The protocol of a new connection: aiohttp's, after making room under the cap, else a 503."""
        assert self._web is not None
        if self.connections.open >= self._max_connections:
            if not self.connections.evict_idle():
                self._count_closed("at-capacity")
                return Refused(self._at_capacity)
            self._count_closed("evicted")
        connection = self._web()
        self.connections.admitted(connection)
        return connection

    def _count_closed(self, cause: str) -> None:
        if self._observer is not None:
            self._observer.on_oip_connection_closed(cause)

    # ------------------------------------------------------------------------------------------- requests

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        connection = request.protocol
        self.connections.working(connection)
        model, version = "", ""
        try:
            try:
                body = await self._body(request)
                # model names are directory names (no "/"): the whole path can be percent-decoded at once
                route = routes.route(request.method, unquote(request.raw_path.split("?", 1)[0]))
                model, version = route.model or "", str(route.version) if route.version is not None else ""
                status, payload, content_type, version = await self._answer(route, body, request.headers, version)
            except oip.OipError as exc:
                status, payload, content_type = exc.status, exc.body(), JSON
            except Exception as exc:  # a bug: the protocol's 500, one log line with the traceback
                log.exception("OIP request %s %s failed", request.method, request.raw_path)
                status, payload, content_type = 500, oip.error_body(f"internal error: {exc!r}"), JSON
            response = web.Response(status=status, body=payload, headers={"Content-Type": content_type})
            if not request.content.at_eof():
                response.force_close()  # the body was not read: where the next request starts is unknown
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:  # the client went away
                pass
            if model and self._observer is not None:
                self._observer.on_oip_request(model, version, status, time.perf_counter() - started)
            return response
        finally:
            self.connections.rested(connection)

    async def _body(self, request: web.BaseRequest) -> bytes:
        length = request.content_length
        if length is None:
            if request.method == "POST":
                raise oip.OipError(411, "a request body needs Content-Length")
            return b""
        if length > self._max_bytes:
            raise oip.OipError.of(
                DecodeError(TOO_LARGE, f"the request has {length} bytes, over the limit of {self._max_bytes}")
            )
        if length == 0:
            return b""
        try:
            return await asyncio.wait_for(request.content.readexactly(length), self._idle_timeout_s)
        except TimeoutError:
            raise oip.OipError(408, f"the body did not arrive within {self._idle_timeout_s:g} s") from None
        except asyncio.IncompleteReadError:
            raise oip.OipError(400, f"the body ended before its Content-Length of {length}") from None

    async def _answer(
        self, route: routes.Route, body: bytes, headers: Mapping[str, str], version: str
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
                route.model, versions, serving, route.version, output_infos(models, ref), _optional_fields(models, ref)
            )
            return 200, _encode(metadata), JSON, str(shown)
        if kind == "model_ready":
            if not self._ready():
                raise oip.OipError(503, f"model {route.model!r} is loaded; the server is not ready")
            return 200, _encode({"name": route.model, "ready": True}), JSON, str(shown)
        if not self._ready():
            raise oip.OipError(503, "not ready")
        header_length = headers.get(BINARY_HEADER)
        if header_length is not None:
            try:
                body = oip.from_binary(body, int(header_length))
            except ValueError:
                raise oip.OipError(400, f"{BINARY_HEADER} {header_length!r} is not a number") from None
        head = oip.check_head(body, self._max_bytes)
        answer = await self._scored(body, routes.model_string(route.model, route.version), head.key)
        if answer.error is not None:
            raise oip.OipError.of(answer.error)
        assert answer.body is not None
        prediction = outputs.decode(answer.body)
        datatypes = self._output_datatypes(models, prediction.model, int(prediction.version))
        response = responses.response_of(prediction, head.id, head.outputs, datatypes)
        return 200, responses.encode_infer_response(response), JSON, prediction.version

    async def _scored(self, body: bytes, model: str, key: bytes | None) -> Answer:
        """The scorer's answer (scored on this loop); a 503 at once when ``max_queued`` requests already wait."""
        if self._queued >= self._max_queued:
            raise oip.OipError(
                503, f"the scoring queue is full ({self._queued} requests wait; worker.oip_max_queued): retry later"
            )
        self._queued += 1
        try:
            return await self._scorer.score(body, model, key)
        finally:
            self._queued -= 1

    def _output_datatypes(self, models: ModelSet, name: str, version: int) -> dict[str, str]:
        cached = self._datatypes.get((name, version))
        if cached is None:
            cached = {o.name: o.datatype for o in output_infos(models, f"{name}@{version}")}
            if len(self._datatypes) > 1000:
                self._datatypes.clear()
            self._datatypes[(name, version)] = cached
        return cached
