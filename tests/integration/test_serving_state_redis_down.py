"""Redis down: ``streamer batch``, ``streamer serve`` and ``models list`` serve the configured policy (here a pin
to version 1 of two) and say so once, in one line, without a traceback; ``serve`` does not repeat it while it
keeps trying."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from streamer import synthetic
from streamer.adapters import devstack
from tests.conftest import ServeProcess
from tests.model_versions import GBDT, LOGISTIC, write_version

WARNING = "cannot read the serving state from Redis"


def workdir(tmp_path: Path) -> dict[str, str]:
    models = tmp_path / "models"
    write_version(models, "fraud", 1, GBDT)
    write_version(models, "fraud", 2, LOGISTIC)
    (tmp_path / "streamer.toml").write_text("[models]\npins = { fraud = 1 }\ncontrol_interval_s = 0.2\n")
    settings = {
        "STREAMER_MODELS_DIR": str(models),
        "STREAMER_REDIS_URL": f"redis://127.0.0.1:{devstack.free_port()}/0",  # nobody listens there
        "STREAMER_STATE_DIR": str(tmp_path / "state"),
    }
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | settings


def run(tmp_path: Path, environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_batch_and_models_list_serve_the_configured_pin_and_say_it_once(tmp_path: Path) -> None:
    environ = workdir(tmp_path)
    rows = tmp_path / "rows.jsonl"
    features = synthetic.features_of(synthetic.transactions(1, seed=5)[0])
    rows.write_text(json.dumps({"id": "r-1", "model": "fraud", "features": features}) + "\n")
    result = run(tmp_path, environ, "batch", str(rows), "-o", str(tmp_path / "out.jsonl"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count(WARNING) == 1, result.stderr
    assert "serving the configured policy" in result.stderr and "served by fraud@1" in result.stderr
    assert json.loads((tmp_path / "out.jsonl").read_text())["version"] == "1"
    listed = run(tmp_path, environ, "models", "list", "--json")
    assert listed.returncode == 0 and listed.stderr.count(WARNING) == 1, listed.stderr
    serving = [row["version"] for row in json.loads(listed.stdout) if row["status"] == "serving"]
    assert serving == [1]


def test_serve_serves_the_configured_pin_and_says_it_once_while_it_keeps_trying(tmp_path: Path) -> None:
    environ = workdir(tmp_path)
    serving = ServeProcess(tmp_path, environ, start_timeout_s=60)
    try:
        time.sleep(1.5)  # several control intervals of 0.2 s, each failing
        text = serving.log()
        assert re.search(r"^serving: fraud@1$", text, re.M), text
        assert text.count(WARNING) == 1 and "Traceback" not in text, text
    finally:
        assert serving.stop(20) == 0, serving.log()[-3000:]
