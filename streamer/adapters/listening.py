"""Listening sockets: whether an address can be listened on, and why not, as one line with the fix.

Why: a second worker on one host, a ``serve --port`` that is taken or a ``--host`` that is not an address of
this machine used to end in ``OSError: [Errno 98]`` or ``socket.gaierror`` tracebacks (Faust's own worker even
logs it at ERROR and exits 1). Every listener streamer opens -- the worker's ``/metrics`` port (either
engine), its OIP port, ``streamer serve`` -- is checked here before anything else starts (``ensure_free``: no
broker wait, no model loading first), and the bind itself is translated the same way (``translated``), so a
port taken in between is the same line.

A check binds the address and closes it at once (``SO_REUSEADDR``, as the servers bind): a port another
process listens on is refused, one in ``TIME_WAIT`` after a stopped worker is not. Port 0 (a free port chosen
at bind) is never checked.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from streamer.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Listener:
    """One address streamer listens on, and how the user chose it (for the line that refuses it)."""

    host: str
    port: int
    host_setting: str  # where the host came from: "worker.metrics_host", "serve --host"
    port_setting: str  # where the port came from: "worker.metrics_port", "serve --port"
    port_fix: str  # what to do about a taken port: "set STREAMER_METRICS_PORT=0 for a free port"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def refusal(listener: Listener, exc: OSError) -> ConfigError:
    """``exc`` (from binding ``listener``) as one line naming the setting at fault and the fix."""
    # socket.create_server re-raises a failed name lookup (gaierror, a negative errno) as a plain OSError
    unresolved = isinstance(exc, socket.gaierror) or (exc.errno or 0) < 0
    if unresolved or exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        cause = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
        return ConfigError(
            f"{listener.host_setting} {listener.host}: not an address this machine can listen on ({cause}): "
            "use 127.0.0.1 (this host only), 0.0.0.0 (every interface) or one of its own addresses"
        )
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{listener.port_setting}: {listener.address} is in use by another process (another worker or "
            f"server on this host?): {listener.port_fix}"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ConfigError(
            f"{listener.port_setting}: not allowed to listen on {listener.address} (ports under 1024 need "
            f"privileges): {listener.port_fix}"
        )
    cause = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
    return ConfigError(f"{listener.port_setting}: cannot listen on {listener.address}: {cause}")


@contextlib.contextmanager
def translated(listener: Listener) -> Iterator[None]:
    """Inside: a bind of ``listener`` that fails raises ``refusal``'s line instead of the ``OSError``."""
    try:
        yield
    except OSError as exc:
        raise refusal(listener, exc) from None


def ensure_free(listener: Listener) -> None:
    """Refuse now (``refusal``) what binding ``listener`` later would; port 0 always binds."""
    if listener.port == 0:
        return
    with translated(listener), socket.create_server((listener.host, listener.port)):
        pass
