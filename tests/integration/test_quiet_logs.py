"""Logs that mean something: a worker of either engine that starts, hot-reloads a model and stops on SIGTERM
logs no WARNING of its own (the reload's model event is INFO, the stop is clean); a command that only answers
logs nothing unless asked (``-v``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamer.adapters import devstack
from tests.conftest import REPO


def wait_for(log_path: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log_path.read_text(errors="replace"):
            return
        assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} within {timeout_s} s:\n{log_path.read_text(errors='replace')[-3000:]}")


@pytest.mark.parametrize("engine", ["faust", "batch"])
def test_a_clean_run_with_a_hot_reload_logs_no_warning(
    engine: str,
    kafka_broker: devstack.ServerInfo,
    redis_server: devstack.ServerInfo,
    topic_factory: Callable[..., str],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "models" / "fraud" / "1", tmp_path / "models" / "fraud" / "1")
    # a prefix of its own: model events are claimed once per prefix in Redis (60 s), and the other engine's
    # run loads the same version
    (tmp_path / "streamer.toml").write_text(f'[redis]\nkey_prefix = "{unique_name("quiet")}"\n')
    roles = ("REQUESTS", "PREDICTIONS", "FEEDBACK", "DLQ", "MODEL_EVENTS", "SHADOW")
    env = {f"STREAMER_{role}_TOPIC": topic_factory(role.lower(), partitions=2) for role in roles} | {
        "STREAMER_KAFKA_BOOTSTRAP": kafka_broker.address,
        "STREAMER_REDIS_URL": redis_server.address,
        "STREAMER_ENGINE": engine,
        "STREAMER_GROUP_ID": unique_name("quiet"),
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_MODELS_DIR": str(tmp_path / "models"),
        "STREAMER_STATE_DIR": str(tmp_path / ".streamer"),
        "STREAMER_CONFIG": str(tmp_path / "streamer.toml"),
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    log_path = tmp_path / "worker.log"
    worker = devstack.start_worker(tmp_path, log_path, env)
    try:
        wait_for(log_path, "metrics: http://", worker)
        staged = tmp_path / "staged"
        shutil.copytree(REPO / "models" / "fraud" / "1", staged)
        card = (staged / "card.toml").read_text()
        (staged / "card.toml").write_text(card.replace("version = 1", "version = 2", 1))
        staged.rename(tmp_path / "models" / "fraud" / "2")  # a version renamed into place, as the docs advise
        wait_for(log_path, "model event model-loaded", worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log_path.read_text(errors="replace")[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    text = log_path.read_text(errors="replace")
    assert "INFO streamer.services.quality_monitor: model event model-loaded" in text
    # streamer's own lines (Faust's app logs under streamer.adapters.faust_consumer too); the libraries' lines
    # report the machine and the broker (a timer late or a connection dropped on a loaded machine is a real
    # event, and not this test's subject)
    ours = re.compile(r" (WARNING|ERROR|CRITICAL) streamer[.:]")
    noisy = [line for line in text.splitlines() if ours.search(line)]
    assert noisy == [], "\n".join(noisy)


def test_a_command_that_answers_logs_nothing_unless_asked(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    environ |= {
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "STREAMER_MODELS_DIR": str(REPO / "models"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamer.cli", *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
        )

    quiet = run("models", "list")
    assert quiet.returncode == 0 and "fraud" in quiet.stdout
    assert quiet.stderr == ""
    verbose = run("-v", "models", "list")
    assert verbose.returncode == 0 and "INFO streamer.adapters.model_repository: loaded model fraud@1" in verbose.stderr
