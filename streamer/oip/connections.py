"""The OIP server's connections: which are open, busy or idle, which one to close to let a new one in, and the
answer of a connection refused at capacity (``oip.http`` owns the server; this module, the connection policy).

A connection past ``worker.oip_max_connections`` closes the connection idle the longest -- a keep-alive client
between requests, or a socket that never sent anything -- so that thousands of silent sockets cannot lock a
real client out; only when every open connection has a request in progress is the new one refused (a 503).
Everything here runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

# A connection closed with a request body unread (too large, 411, 408) or refused at capacity first reads and
# drops what its client still sends this long, so that the client reads the answer rather than a reset.
LINGER_S = 1.0


class Connections:
    """The open connections, split into busy (a request in progress) and idle, the least recently active idle
    one first; plus the accepted ones aiohttp has not connected yet (``pending``: the loop accepts a burst of
    connections before the first of them is connected, so the cap counts them from their acceptance). Used on
    the server's loop only. A connection closed to make room leaves the counts at once.

    Invariant: ``open`` (idle + busy + pending) never exceeds the cap the server checks before admitting."""

    def __init__(self) -> None:
        self.idle: dict[RequestHandler, None] = {}  # insertion order: least recently active first
        self.busy: set[RequestHandler] = set()
        self.pending: dict[RequestHandler, None] = {}  # accepted, not connected yet; oldest first
        self._doomed: set[RequestHandler] = set()  # evicted while pending: closed as soon as connected

    @property
    def open(self) -> int:
        return len(self.idle) + len(self.busy) + len(self.pending)

    def admitted(self, connection: RequestHandler) -> None:
        self.pending[connection] = None

    def opened(self, connection: RequestHandler) -> None:
        if connection in self._doomed:  # closed once aiohttp has set it up (it starts it after this call)
            self._doomed.discard(connection)
            asyncio.get_running_loop().call_soon(connection.force_close)
        elif connection in self.pending:
            del self.pending[connection]
            self.idle[connection] = None

    def closed(self, connection: RequestHandler) -> None:
        self.idle.pop(connection, None)
        self.pending.pop(connection, None)
        self.busy.discard(connection)
        self._doomed.discard(connection)

    def working(self, connection: RequestHandler) -> None:
        if connection in self.idle:  # else closed, or evicted: not counted again
            del self.idle[connection]
            self.busy.add(connection)

    def rested(self, connection: RequestHandler) -> None:
        if connection in self.busy:
            self.busy.discard(connection)
            self.idle[connection] = None

    def evict_idle(self) -> bool:
        """Close the connection idle the longest (else the oldest not yet connected: it has sent nothing
        either); False when every connection has a request in progress."""
        if self.idle:
            connection = next(iter(self.idle))
            del self.idle[connection]
            connection.force_close()
            return True
        if self.pending:  # also where one whose connection never came (a failed transport) leaves
            connection = next(iter(self.pending))
            del self.pending[connection]
            self._doomed.add(connection)
            return True
        return False


class ConnectionServer(web.Server):
    """aiohttp's low-level server telling ``Connections`` when a connection opens and closes."""

    def __init__(self, handler: Any, connections: Connections, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.book = connections

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.book.opened(handler)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.book.closed(handler)


class Refused(asyncio.Protocol):
    """A connection past the cap while every slot is busy: a 503 in the protocol's JSON, then closed (after
    reading what the client sends for a moment, so that it reads the answer rather than a reset)."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._response)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:  # the request it will not get an answer to
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class ClientErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp reports a malformed request (a client's fault, answered 400) with ``logger.exception``: one DEBUG
    line here, not an ERROR with a traceback per bad client."""

    def exception(self, msg: object, *args: object, exc_info: object = True, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)
