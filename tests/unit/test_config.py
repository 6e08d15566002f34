from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer import config
from streamer.core.errors import ConfigError


def test_defaults_match_the_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = config.load(environ={})
    assert s.topics.all() == (
        "requests",
        "predictions",
        "feedback",
        "requests.dlq",
        "model-events",
        "predictions.shadow",
    )
    assert (s.worker.engine, s.worker.group_id, s.worker.metrics_port) == ("faust", "streamer", 9464)
    assert s.models.dir == "models"
    assert s.kafka.bootstrap is None and s.redis.url is None


def test_every_contract_variable_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    environ = {
        "STREAMER_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
        "STREAMER_REDIS_URL": "redis://r:6379/1",
        "STREAMER_REQUESTS_TOPIC": "in",
        "STREAMER_PREDICTIONS_TOPIC": "out",
        "STREAMER_FEEDBACK_TOPIC": "labels",
        "STREAMER_DLQ_TOPIC": "in.dlq",
        "STREAMER_MODELS_DIR": "m",
        "STREAMER_DEFAULT_MODEL": "fraud",
        "STREAMER_ENGINE": "batch",
        "STREAMER_GROUP_ID": "g",
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_BATCH_MAX_SIZE": "64",
        "STREAMER_BATCH_MAX_WAIT_MS": "2.5",
        # extensions of the contract's list
        "STREAMER_MODEL_EVENTS_TOPIC": "events",
        "STREAMER_REDIS_PASSWORD": "s3cret",
        "STREAMER_ACCURACY_FLOOR": "0.8",
        "STREAMER_ONLINE_REFRESH_MS": "250",
        "STREAMER_SHADOW_TOPIC": "challengers",
        "STREAMER_METRICS_HOST": "0.0.0.0",
        "STREAMER_OIP_PORT": "8080",
        "STREAMER_OIP_HOST": "0.0.0.0",
    }
    s = config.load(environ=environ)
    assert s.kafka.bootstrap == "k1:9092,k2:9092" and s.redis.url == "redis://r:6379/1"
    assert s.topics.all() == ("in", "out", "labels", "in.dlq", "events", "challengers")
    assert (s.redis.password, s.evaluation.accuracy_floor, s.online.refresh_ms) == ("s3cret", 0.8, 250)
    assert (s.models.dir, s.models.default) == ("m", "fraud")
    assert (s.worker.engine, s.worker.group_id, s.worker.metrics_port) == ("batch", "g", 0)
    assert (s.worker.batch_max_size, s.worker.batch_max_wait_ms) == (64, 2.5)
    assert s.worker.metrics_host == "0.0.0.0"
    assert (s.worker.oip_port, s.worker.oip_host) == (8080, "0.0.0.0")
    assert set(environ) == set(config.ENVIRONMENT) - {"STREAMER_STATE_DIR"}


def test_environment_overrides_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[topics]\nrequests = "from-file"\npredictions = "p-file"\n[kafka.client]\n"security.protocol" = "SASL_SSL"\n'
    )
    s = config.load(path, environ={"STREAMER_REQUESTS_TOPIC": "from-env"})
    assert s.topics.requests == "from-env"
    assert s.topics.predictions == "p-file"
    assert s.kafka.client == {"security.protocol": "SASL_SSL"}
    assert s.source == str(path)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[nope]\nx = 1\n", {}, "unknown section [nope]"),
        ("[worker]\nbatch_size = 1\n", {}, "unknown setting worker.batch_size"),
        ('[worker]\nbatch_max_size = "big"\n', {}, "worker.batch_max_size: expected int"),
        ("[worker]\nbatch_max_size = 0\n", {}, "must be at least 1"),
        ("", {"STREAMER_METRICS_PORT": "http"}, "STREAMER_METRICS_PORT: expected int"),
        ("", {"STREAMER_ENGINE": "spark"}, "'spark' is not one of faust, batch"),
        ("", {"STREAMER_MODELS_DIR": "/does/not/exist"}, "is not a directory"),
        ("", {"STREAMER_PREDICTIONS_TOPIC": "requests"}, "names must be distinct"),
        ("[worker\n", {}, "s.toml"),
    ],
)
def test_bad_settings_fail_at_load_naming_the_setting(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        config.load(path, environ=environ)
    assert message in str(raised.value)


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "absent.toml", environ={})


def test_unknown_streamer_variables_are_reported_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = config.load(environ={"STREAMER_BOOTSTRAP": "typo", "STREAMER_LOG_LEVEL": "DEBUG"})
    assert s.unknown_env == ("STREAMER_BOOTSTRAP",)


def test_the_dev_stack_fills_unset_addresses_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    state = tmp_path / ".streamer"
    state.mkdir()
    (state / "dev.json").write_text(
        json.dumps({"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:2/0"})
    )
    s = config.load(environ={})
    assert (s.kafka.bootstrap, s.redis.url) == ("127.0.0.1:1", "redis://127.0.0.1:2/0")
    s = config.load(environ={"STREAMER_KAFKA_BOOTSTRAP": "real:9092"})
    assert (s.kafka.bootstrap, s.redis.url) == ("real:9092", "redis://127.0.0.1:2/0")


def test_require_bootstrap_explains_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="streamer dev up"):
        config.load(environ={}).require_bootstrap()
