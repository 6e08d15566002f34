"""``streamer graph list | show`` on the shipped example graphs, and a broken graph refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import REPO
from tests.integration.test_topics_and_models import run


def repository(tmp_path: Path) -> dict[str, str]:
    for name in ("fraud-online", "fraud-forest", "fraud-derived"):
        shutil.copytree(REPO / "examples" / "models" / name, tmp_path / "models" / name)
    shutil.copytree(REPO / "models" / "fraud", tmp_path / "models" / "fraud")
    shutil.copytree(REPO / "examples" / "graphs", tmp_path / "graphs")
    return {"STREAMER_MODELS_DIR": str(tmp_path / "models")}


def errors(stderr: str) -> list[str]:
    """The error lines (model loading logs its INFO lines to stderr before them)."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if not line[:4].isdigit()]


def test_graph_list_and_show_describe_the_shipped_graphs(tmp_path: Path) -> None:
    env = repository(tmp_path)
    listed = run(["graph", "list", "--json"], tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    graphs = {g["graph"]: g for g in json.loads(listed.stdout)}
    assert set(graphs) == {"fraud-graph@1", "fraud-ensemble@1", "fraud-cascade@1"}
    # the cascade is declared before the transform its first model reads: it runs after it
    assert list(graphs["fraud-cascade@1"]["stages"].items()) == [("derived", "transform"), ("phases", "cascade")]
    assert list(graphs["fraud-graph@1"]["stages"].items()) == [
        ("account", "enrich"),
        ("derived", "transform"),
        ("phases", "cascade"),
        ("decide", "rules"),
    ]
    shown = run(["graph", "show", "fraud-graph"], tmp_path, **env)
    assert shown.returncode == 0, shown.stderr
    assert "phases: cascade fraud-online -> fraud when 0.25 <= score <= 0.6" in shown.stdout
    assert "decide: rules (first-match, 6 rules, default allow)  <- account, derived, phases" in shown.stdout
    assert "account: enrich account by key -> chargebacks_90d, flagged (on failure: review)" in shown.stdout
    cascade = run(["graph", "show", "fraud-cascade"], tmp_path, **env)
    assert "phases: cascade fraud-derived -> fraud when 0.25 <= score <= 0.6  <- derived" in cascade.stdout
    dot = run(["graph", "show", "fraud-ensemble", "--dot"], tmp_path, **env)
    assert dot.stdout.startswith('digraph "fraud-ensemble@1"') and '"gbdt" -> "mean";' in dot.stdout
    drawn = run(["graph", "show", "fraud-graph", "--svg", str(tmp_path / "g.svg")], tmp_path, **env)
    if shutil.which("dot"):
        assert drawn.returncode == 0 and (tmp_path / "g.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    else:
        assert drawn.returncode == 2 and "graphviz's `dot` is not installed" in drawn.stderr
        assert errors(drawn.stderr) == [
            "error: graph show --svg: graphviz's `dot` is not installed (apt-get install graphviz)"
        ]


def test_a_graph_with_a_cycle_or_a_missing_model_is_refused_in_one_line(tmp_path: Path) -> None:
    env = repository(tmp_path)
    graph = tmp_path / "graphs" / "fraud-ensemble.toml"
    text = graph.read_text()
    graph.write_text(text.replace('model = "fraud-forest"', 'model = "fraud-jungle"'))
    missing = run(["graph", "show", "fraud-ensemble"], tmp_path, **env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "stage 'forest': no model named 'fraud-jungle'" in missing.stderr
    graph.write_text(
        text.replace('kind = "model"\nmodel = "fraud"', 'kind = "model"\nmodel = "fraud"\nafter = ["mean"]')
    )
    cycle = run(["graph", "list"], tmp_path, **env)
    assert cycle.returncode == 2 and len(errors(cycle.stderr)) == 1 and "cycle" in errors(cycle.stderr)[0]
