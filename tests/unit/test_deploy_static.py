"""docker-compose.yml, the Dockerfile, the Prometheus config and the Grafana dashboards, checked statically:
they parse, and agree with the code (environment variables, metrics port, exported metric names)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import yaml

from streamer import config
from streamer.adapters.prometheus_drift import ConceptDriftMetrics
from streamer.adapters.prometheus_metrics import WorkerMetrics

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
RULES = yaml.safe_load((REPO / "deploy/prometheus/rules/streamer.yml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
DASHBOARDS = {p.name: json.loads(p.read_text()) for p in (REPO / "deploy/grafana/dashboards").glob("*.json")}


def exported_metric_names() -> set[str]:
    """What the worker's registry serves, with the sample suffixes histograms and counters add."""
    names: set[str] = set()
    metrics = WorkerMetrics()
    ConceptDriftMetrics(metrics)  # registered beside the worker's when Redis is configured
    for family in metrics.registry.collect():
        names.add(family.name)
        names |= {family.name + suffix for suffix in ("_total", "_bucket", "_sum", "_count", "_created")}
    return names


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bstreamer_[a-z0-9_]+", expr))


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(name, t["expr"]) for name, d in DASHBOARDS.items() for p in d["panels"] for t in p["targets"]]


def test_the_production_shape_has_every_service() -> None:
    assert set(COMPOSE["services"]) == {"kafka", "redis", "topics", "worker", "prometheus", "grafana"}
    assert COMPOSE["services"]["worker"]["deploy"]["replicas"] >= 2
    assert "KRaft" in (REPO / "docker-compose.yml").read_text() or "controller" in str(COMPOSE["services"]["kafka"])


def test_images_are_pinned_to_versions() -> None:
    for name, service in COMPOSE["services"].items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
    base = re.search(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert base and re.search(r":\d+\.\d+\.\d+", base.group(1)), "the Dockerfile's base image is not pinned"


def test_worker_environment_is_the_contracts_and_loads(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = COMPOSE["services"]["worker"]["environment"]
    streamer_vars = {k for k in env if k.startswith("STREAMER_")}
    known = set(config.ENVIRONMENT) | {"STREAMER_LOG_JSON", "STREAMER_LOG_LEVEL"}
    assert streamer_vars <= known, streamer_vars - known
    assert {"STREAMER_KAFKA_BOOTSTRAP", "STREAMER_REDIS_URL", "STREAMER_METRICS_PORT"} <= streamer_vars
    loadable = {k: str(v) for k, v in env.items() if k in config.ENVIRONMENT} | {
        "STREAMER_MODELS_DIR": str(REPO / "models")
    }
    settings = config.load(None, environ=loadable)
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.topics.all() == (
        "requests",
        "predictions",
        "feedback",
        "requests.dlq",
        "model-events",
        "predictions.shadow",
    )
    assert COMPOSE["services"]["topics"]["environment"] == env


def test_prometheus_scrapes_the_worker_service_on_its_metrics_port() -> None:
    port = int(COMPOSE["services"]["worker"]["environment"]["STREAMER_METRICS_PORT"])
    assert str(port) in COMPOSE["services"]["worker"]["expose"]
    assert f"EXPOSE {port}" in DOCKERFILE and "HEALTHCHECK" in DOCKERFILE
    [job] = PROMETHEUS["scrape_configs"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == port
    assert job["metrics_path"] == "/metrics"
    mounts = COMPOSE["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts
    assert PROMETHEUS["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_the_worker_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")


def test_every_dashboard_and_rule_query_reads_an_exported_metric() -> None:
    exported = exported_metric_names()
    queries = dashboard_exprs() + [("rules", r["expr"]) for g in RULES["groups"] for r in g["rules"]]
    assert len(queries) >= 15
    for where, expr in queries:
        names = metric_names(expr)
        assert names or "up{" in expr, f"{where}: {expr} reads no streamer metric"
        assert names <= exported, f"{where}: {expr} reads {names - exported}, which the worker does not export"


# Names the code exported before a rename: the CHANGELOG has a migration note for each; the docs may name them as
# older names (``streamer top`` still reads them from older workers); no dashboard or rule may.
RENAMED = {"streamer_rolling_metric"}


def recorded_names() -> set[str]:
    return {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}


def test_the_promtool_tests_and_the_dashboard_generator_read_exported_metrics_and_recorded_rules() -> None:
    """The rules' unit tests feed series under the names the worker exports and query recorded names; the
    generator of the dashboards writes what is committed."""
    exported, recorded = exported_metric_names(), recorded_names()
    promtool = yaml.safe_load((REPO / "deploy/prometheus/rules/streamer_test.yml").read_text())["tests"]
    tests = "\n".join(
        [s["series"] for t in promtool for s in t["input_series"]]
        + [e["expr"] for t in promtool for e in t.get("promql_expr_test", [])]
    )
    assert metric_names(tests) and metric_names(tests) <= exported, metric_names(tests) - exported
    queried = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", tests))
    assert queried <= recorded, queried - recorded
    for where, expr in dashboard_exprs():
        used = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", expr))
        assert used <= recorded, f"{where}: {expr} reads {used - recorded}, which no rule records"
    spec = importlib.util.spec_from_file_location("build_dashboards", REPO / "deploy/grafana/build_dashboards.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    generated = (REPO / "deploy/grafana/build_dashboards.py").read_text()
    assert metric_names(generated) <= exported, metric_names(generated) - exported
    panels = {"overview.json": build.OVERVIEW, "model-quality.json": build.MODEL_QUALITY}
    for name, committed in DASHBOARDS.items():
        assert build.dashboard(committed["uid"], committed["title"], panels[name]) == committed, (
            f"{name} differs from what deploy/grafana/build_dashboards.py writes: re-run it"
        )


def test_the_readme_and_docs_name_only_exported_or_renamed_metrics() -> None:
    exported = exported_metric_names() | {"streamer_"}  # the prefix itself
    note = r"\*\*Migration[^*]*\*\*.*?(?:\n\n|$)"  # a "**Migration (...).**" paragraph
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]:
        outside = re.sub(note, "", path.read_text(), flags=re.S)
        documented = set(re.findall(r"`(streamer_[a-z0-9_]*)", outside))
        assert documented <= exported | RENAMED, f"{path.relative_to(REPO)} names {documented - exported - RENAMED}"
    changelog = (REPO / "CHANGELOG.md").read_text()
    migrations = re.findall(r"^### Migration\n(.*?)(?=^##|\Z)", changelog, re.S | re.M)  # every release's section
    assert metric_names(" ".join(migrations)) >= RENAMED, "a renamed metric has no migration note in CHANGELOG.md"
    assert not RENAMED & exported


def test_grafana_provisioning_points_at_the_shipped_dashboards() -> None:
    mounts = COMPOSE["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/streamer.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert set(DASHBOARDS) == {"overview.json", "model-quality.json"}
    for dashboard in DASHBOARDS.values():
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == uid
