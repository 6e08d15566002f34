"""The event loop's lag, measured from inside: how late a callback scheduled on the loop runs.

Every ``interval_s`` the probe sleeps on the loop and reports how much later than asked it woke up: the time
the loop spent running something else (a callback or a task step that did not yield), or its thread spent
waiting for the GIL while another thread held it. A healthy loop shows less than a millisecond (the selector
rounds its timeouts up to the next millisecond, so that much is the floor). Both engines run it on their loop
(``engines.common.Shell.start``); the worker exports it as ``streamer_event_loop_lag_seconds``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL_S = 0.1


async def watch_loop_lag(observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
    """Report the lag of each wake-up to ``observe`` (seconds, never negative), until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(loop.time() - due, 0.0))
