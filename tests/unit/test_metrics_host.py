"""Where /metrics listens: loopback unless configured (the container sets all interfaces)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamer import config
from streamer.adapters.http_endpoints import Endpoints
from tests.conftest import REPO


def test_the_default_is_loopback_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config.load(environ={}).worker.metrics_host == "127.0.0.1"
    assert config.load(environ={"STREAMER_METRICS_HOST": "0.0.0.0"}).worker.metrics_host == "0.0.0.0"


def test_the_endpoints_bind_the_configured_host() -> None:
    endpoints = Endpoints(0, lambda: b"", "text/plain", lambda: None)
    endpoints.start()  # stop() waits for the serving loop
    try:
        assert endpoints._server.server_address[0] == "127.0.0.1"
    finally:
        endpoints.stop()
    endpoints = Endpoints(0, lambda: b"", "text/plain", lambda: None, host="0.0.0.0")
    endpoints.start()
    try:
        assert endpoints._server.server_address[0] == "0.0.0.0"
    finally:
        endpoints.stop()


def test_the_container_listens_on_all_interfaces() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["environment"]["STREAMER_METRICS_HOST"] == "0.0.0.0"
    assert "STREAMER_METRICS_HOST=0.0.0.0" in (REPO / "Dockerfile").read_text()
