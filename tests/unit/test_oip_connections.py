"""``oip.connections.Connections``: the open count never passes the cap the server checks, the connection
idle the longest is the one closed for a new one, busy ones are never closed, and one evicted before aiohttp
connected it is closed as soon as it is."""

from __future__ import annotations

import asyncio

from streamer.oip.connections import Connections


class Conn:
    """A connection as ``Connections`` sees it: something that can be closed."""

    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def force_close(self) -> None:
        self.closed = True


def admit(book: Connections, cap: int, conn: Conn) -> str:
    """What the server does for a new connection: make room under the cap, or refuse."""
    if book.open >= cap and not book.evict_idle():
        return "refused"
    book.admitted(conn)  # type: ignore[arg-type]
    return "admitted"


def test_the_idle_longest_is_evicted_and_busy_ones_never() -> None:
    book, cap = Connections(), 3
    a, b, c, d, e = (Conn(n) for n in "abcde")
    for conn in (a, b, c):
        assert admit(book, cap, conn) == "admitted"
        book.opened(conn)  # type: ignore[arg-type]
    book.working(a)  # type: ignore[arg-type]
    book.rested(a)  # type: ignore[arg-type]  # a is now the most recently active
    book.working(b)  # type: ignore[arg-type]  # b has a request in progress
    assert admit(book, cap, d) == "admitted" and c.closed and not (a.closed or b.closed)
    book.opened(d)  # type: ignore[arg-type]
    book.working(a)  # type: ignore[arg-type]
    book.working(d)  # type: ignore[arg-type]
    assert book.open == cap and len(book.busy) == 3
    assert admit(book, cap, e) == "refused", "every connection busy"
    book.rested(d)  # type: ignore[arg-type]
    book.closed(c)  # type: ignore[arg-type]  # aiohttp reports the evicted one's end: counted once only
    assert book.open == cap and admit(book, cap, e) == "admitted" and d.closed
    book.working(d)  # type: ignore[arg-type]  # a request parsed on a connection already evicted: not counted
    assert book.open == cap


def test_a_burst_accepted_before_any_connects_stays_under_the_cap() -> None:
    """The loop accepts many connections before it connects the first: those are counted from acceptance, and
    one evicted while pending is closed once aiohttp has set it up."""

    async def main() -> None:
        book, cap = Connections(), 4
        burst = [Conn(str(i)) for i in range(10)]
        for conn in burst:
            assert admit(book, cap, conn) == "admitted"
            assert book.open <= cap
        for conn in burst:
            book.opened(conn)  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert [c.closed for c in burst] == [True] * 6 + [False] * 4, "the newest four stay"
        assert book.open == 4 and list(book.idle) == burst[6:]

    asyncio.run(main())
