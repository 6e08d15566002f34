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
        "STREAMER_KAFKA_SASL_PASSWORD": "k-s3cret",
        "STREAMER_ACCURACY_FLOOR": "0.8",
        "STREAMER_ONLINE_REFRESH_MS": "250",
        "STREAMER_SHADOW_TOPIC": "challengers",
        "STREAMER_METRICS_HOST": "0.0.0.0",
        "STREAMER_OIP_PORT": "8080",
        "STREAMER_OIP_HOST": "0.0.0.0",
        "STREAMER_WORKER_NAME": "scorer-7",
    }
    s = config.load(environ=environ)
    assert s.kafka.bootstrap == "k1:9092,k2:9092" and s.redis.url == "redis://r:6379/1"
    assert s.topics.all() == ("in", "out", "labels", "in.dlq", "events", "challengers")
    assert (s.redis.password, s.evaluation.accuracy_floor, s.online.refresh_ms) == ("s3cret", 0.8, 250)
    assert s.kafka.sasl_password == s.kafka.client["sasl.password"] == "k-s3cret"
    assert (s.models.dir, s.models.default) == ("m", "fraud")
    assert (s.worker.engine, s.worker.group_id, s.worker.metrics_port) == ("batch", "g", 0)
    assert (s.worker.batch_max_size, s.worker.batch_max_wait_ms) == (64, 2.5)
    assert s.worker.metrics_host == "0.0.0.0"
    assert (s.worker.oip_port, s.worker.oip_host) == (8080, "0.0.0.0")
    assert s.worker.name == s.worker.worker_id() == "scorer-7"
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


def test_the_sasl_password_variable_reaches_every_kafka_client_over_the_files(tmp_path: Path) -> None:
    """A Secret gives the SASL password as a variable; the rest of ``[kafka.client]`` stays in the file."""
    path = tmp_path / "s.toml"
    path.write_text('[kafka.client]\n"sasl.username" = "streamer"\n"sasl.password" = "from-file"\n')
    s = config.load(path, environ={"STREAMER_KAFKA_SASL_PASSWORD": "from-secret"})
    assert s.kafka.client == {"sasl.username": "streamer", "sasl.password": "from-secret"}
    assert config.load(path, environ={}).kafka.client["sasl.password"] == "from-file"
    assert config.load(None, environ={"STREAMER_KAFKA_SASL_PASSWORD": ""}).kafka.client == {}  # empty: unset
    assert config.redact("kafka.sasl_password", "from-secret") == config.REDACTED


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("[nope]\nx = 1\n", {}, "unknown section [nope] (from {file}): known are kafka, topics, redis, evaluation,"),
        ("[worker]\nbatch_size = 1\n", {}, "unknown setting worker.batch_size (from {file}): did you mean"),
        ('[worker]\nbatch_max_size = "big"\n', {}, "worker.batch_max_size: expected int, got 'big' (from {file})"),
        ("[worker]\nbatch_max_size = 1.5\n", {}, "worker.batch_max_size: expected int, got 1.5 (from {file})"),
        ("[worker]\nbatch_max_size = 0\n", {}, "worker.batch_max_size: must be at least 1, got 0 (from {file})"),
        ("[worker]\nmetrics_port = 70000\n", {}, "worker.metrics_port: must be at most 65535, got 70000"),
        ("worker = 1\n", {}, "worker: expected a table [worker], got 1 (from {file})"),
        ('[models.pins]\na = 1\nb = "x"\n', {}, "models.pins.b: expected int, got 'x' (from {file})"),
        ('[models.canary.fraud]\n"2" = 1.5\n', {}, "models.canary.fraud: '2' = 1.5 is not a version = share"),
        ("[rollout]\nenabled = true\n", {}, "rollout.enabled: expected one table per model, e.g. [rollout.fraud]"),
        ("[rollout.fraud]\nenabld = true\n", {}, "unknown setting rollout.fraud.enabld (from {file}): did you"),
        ('[rollout.fraud]\nstage = "x"\n', {}, "rollout.fraud: stage must be one of canary, shadow, got 'x'"),
        ('[rollout.fraud]\nwindow = "2m"\n', {}, "rollout.fraud.window: '2m' is not one of evaluation.windows"),
        ('[evaluation]\nwindows = "5x"\n', {}, "evaluation.windows: '5x' is not a window like 30s, 5m, 1h or 7d"),
        ("[kafka]\ntransactional = true\n", {}, "kafka.transactional: transactions need the batch engine"),
        ("", {"STREAMER_METRICS_PORT": "http"}, "worker.metrics_port: expected int, got 'http' (from STREAMER_METRICS"),
        ("", {"STREAMER_BATCH_MAX_SIZE": "0"}, "worker.batch_max_size: must be at least 1, got '0' (from STREAMER_BAT"),
        ("", {"STREAMER_ACCURACY_FLOOR": "2"}, "evaluation.accuracy_floor: must be at most 1.0, got '2' (from STREAM"),
        ("", {"STREAMER_ENGINE": "spark"}, "worker.engine: 'spark' is not one of faust, batch (from STREAMER_ENGINE)"),
        ("", {"STREAMER_MODELS_DIR": "/does/not/exist"}, "models.dir: /does/not/exist is not a directory (from STREA"),
        ("", {"STREAMER_PREDICTIONS_TOPIC": "requests"}, "topics.predictions: 'requests' is also topics.requests"),
        ("", {"STREAMER_DLQ_TOPIC": ""}, "topics.dlq: empty: topic names must be distinct and non-empty (from STREA"),
        ("[worker\n", {}, "{file}: "),
    ],
)
def test_bad_settings_fail_at_load_naming_the_setting_and_its_source(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        config.load(path, environ=environ)
    assert str(raised.value).startswith(message.format(file=path)), str(raised.value)
    assert "\n" not in str(raised.value)


def test_an_error_never_shows_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[redis]\npassword = 123456789\n")
    with pytest.raises(ConfigError, match=r"^redis.password: expected str \| none, got '<redacted>'") as raised:
        config.load(path, environ={})
    assert "123456789" not in str(raised.value)


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


def _get(settings: config.Settings, name: str) -> object:
    section, _, rest = name.partition(".")
    if section == "rollout":
        model, _, field = rest.partition(".")
        return getattr(settings.rollout[model], field)
    return getattr(getattr(settings, section), rest)


@pytest.mark.parametrize(
    ("text", "environ", "setting", "value", "source"),
    [
        ("", {}, "worker.batch_max_size", 256, "default"),
        ("[worker]\nbatch_max_size = 64\n", {}, "worker.batch_max_size", 64, "file"),
        ("[worker]\nbatch_max_size = 64\n", {"STREAMER_BATCH_MAX_SIZE": "32"}, "worker.batch_max_size", 32, "env"),
        # TOML's int is a float setting's value; a variable's blanks around a number are ignored
        ("[worker]\nbatch_max_wait_ms = 5\n", {}, "worker.batch_max_wait_ms", 5.0, "file"),
        ("", {"STREAMER_BATCH_MAX_WAIT_MS": " 2.5 "}, "worker.batch_max_wait_ms", 2.5, "env"),
        # an empty variable unsets an optional setting, even one the file sets
        ('[models]\ndefault = "fraud"\n', {"STREAMER_DEFAULT_MODEL": ""}, "models.default", None, "env"),
        ("", {"STREAMER_GROUP_ID": ""}, "worker.group_id", "", "env"),
        ('[kafka.client]\n"sasl.mechanism" = "PLAIN"\n', {}, "kafka.client", {"sasl.mechanism": "PLAIN"}, "file"),
        ("[models.pins]\nfraud = 2\n", {}, "models.pins", {"fraud": 2}, "file"),
        ('[models.canary.fraud]\n"2" = 1\n', {}, "models.canary", {"fraud": {"2": 1.0}}, "file"),
        ("[rollout.fraud]\nenabled = true\n", {}, "rollout.fraud.enabled", True, "file"),
        ("[rollout.fraud]\nenabled = true\n", {}, "rollout.fraud.stage", "shadow", "default"),
        ("", {"STREAMER_ENGINE": "batch"}, "worker.engine", "batch", "env"),
        ("", {"STREAMER_OIP_PORT": "8080"}, "worker.oip_port", 8080, "env"),
    ],
)
def test_each_setting_takes_the_environment_then_the_file_then_the_default(
    tmp_path: Path, text: str, environ: dict[str, str], setting: str, value: object, source: str
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    environ = {"STREAMER_STATE_DIR": str(tmp_path)} | environ
    settings, sources = config.load_with_sources(path, environ)
    assert _get(settings, setting) == value
    assert type(_get(settings, setting)) is type(value)
    if source == "env":
        source = f"environment {next(v for v, target in config.ENVIRONMENT.items() if '.'.join(target) == setting)}"
    assert str(config.source_of(setting, sources)) == {"file": f"file {path}"}.get(source, source)


def test_a_new_variable_of_any_type_needs_only_its_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Booleans (true/false/1/0/yes/no) and dicts (JSON) convert as the types of the current variables do."""
    monkeypatch.setitem(config.ENVIRONMENT, "STREAMER_TEST_WATCH", ("models", "watch"))
    monkeypatch.setitem(config.ENVIRONMENT, "STREAMER_TEST_PINS", ("models", "pins"))
    monkeypatch.chdir(tmp_path)

    def load(**environ: str) -> config.Settings:
        return config.load(environ=environ)

    for text, expected in [("yes", True), ("No", False), ("TRUE", True), ("0", False), (" 1 ", True)]:
        assert load(STREAMER_TEST_WATCH=text).models.watch is expected
    assert load(STREAMER_TEST_PINS='{"fraud": 2}').models.pins == {"fraud": 2}
    with pytest.raises(ConfigError, match=r"^models.watch: expected bool, got 'maybe' \(from STREAMER_TEST_WATCH\)$"):
        load(STREAMER_TEST_WATCH="maybe")
    with pytest.raises(ConfigError, match=r"^models.pins.fraud: expected int, got 'x' \(from STREAMER_TEST_PINS\)$"):
        load(STREAMER_TEST_PINS='{"ok": 1, "fraud": "x"}')
    with pytest.raises(ConfigError, match=r"^models.pins: not JSON .* \(from STREAMER_TEST_PINS\)$"):
        load(STREAMER_TEST_PINS="fraud=2")


def test_the_dev_stack_is_named_as_the_source_of_the_addresses_it_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dev.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://x/0"}))
    settings, sources = config.load_with_sources(
        environ={"STREAMER_STATE_DIR": str(tmp_path), "STREAMER_REDIS_URL": "redis://real:6379/0"}
    )
    assert settings.kafka.bootstrap == "127.0.0.1:1"
    assert sources["kafka.bootstrap"] == config.Source("dev stack", str(tmp_path / "dev.json"))
    assert sources["redis.url"] == config.Source("environment", "STREAMER_REDIS_URL")


def test_every_variable_names_a_declared_setting_and_every_setting_has_a_default() -> None:
    for variable, (section, key) in config.ENVIRONMENT.items():
        assert f"{section}.{key}" in config.FIELD_TYPES, variable
    settings = config.Settings()  # every field has a default
    assert settings.worker.engine in config.ENGINES
    assert set(config.SECTIONS) == {f for f in config.Settings.__struct_fields__} - {"rollout", "source", "unknown_env"}


def test_settings_are_immutable_values() -> None:
    settings = config.Settings()
    with pytest.raises(AttributeError):
        settings.worker.engine = "batch"  # type: ignore[misc]
    assert settings == config.Settings() and settings.redis == config.RedisSettings()
