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


def test_the_container_serves_on_demand_scoring_on_all_interfaces() -> None:
    """The image and the compose file turn the OIP endpoint on (8080, off by default outside a container)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    assert worker["environment"]["STREAMER_OIP_PORT"] == "8080"
    assert worker["environment"]["STREAMER_OIP_HOST"] == "0.0.0.0"
    assert "8080" in worker["expose"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "STREAMER_OIP_PORT=8080" in dockerfile and "STREAMER_OIP_HOST=0.0.0.0" in dockerfile
    assert "EXPOSE 9464 8080" in dockerfile
