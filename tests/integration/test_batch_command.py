"""`streamer batch`: offline scoring of a JSONL file, same decoding, routing and model as the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer import synthetic
from tests.conftest import REPO


def test_a_file_is_scored_line_by_line_with_dead_letters_apart(tmp_path: Path) -> None:
    rows = synthetic.transactions(200, seed=51)
    lines = [json.dumps({"id": f"f-{i}", "features": synthetic.features_of(r)}) for i, r in enumerate(rows)]
    lines[10:10] = ["not json", json.dumps({"features": {"amount": 1}}), json.dumps({"model": "nope", "features": {}})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")} | {
        "STREAMER_MODELS_DIR": str(REPO / "models")
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamer.cli",
            "batch",
            "in.jsonl",
            "--out",
            "p.jsonl",
            "--dead-letters",
            "d.jsonl",
            "--batch-size",
            "64",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "200 predictions, 3 dead letters" in result.stderr
    predictions = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [f"f-{i}" for i in range(200)]  # input order
    session = ort.InferenceSession(str(REPO / "models/fraud/1/model.onnx"), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"float_input": rows.astype(np.float32)})
    # float32 sums over the trees may round differently with another batch size: 1e-6 absolute on probabilities
    np.testing.assert_allclose([p["score"] for p in predictions], probabilities[:, 1], rtol=1e-6, atol=1e-6)
    dead = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [(d["line"], d["error"]) for d in dead] == [(11, "invalid-json"), (12, "schema"), (13, "unknown-model")]
