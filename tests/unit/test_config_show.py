"""``streamer config show``: every effective setting with its source, secrets redacted, in text and JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from streamer import config
from streamer.cli import app
from streamer.core.errors import ConfigError

REDACTED = config.REDACTED


@pytest.fixture(autouse=True)
def _no_streamer_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test gives reach the settings (CliRunner's env adds to os.environ)."""
    for name in [n for n in os.environ if n.startswith("STREAMER_")]:
        monkeypatch.delenv(name)


def show(tmp_path: Path, toml: str, environ: dict[str, str], *options: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(toml)
    environ = {"STREAMER_STATE_DIR": str(tmp_path)} | environ
    result = CliRunner().invoke(app, ["--config", str(path), "config", "show", *options], env=environ)
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("redis.password", True),
        ('kafka.client."sasl.password"', True),
        ('kafka.client."ssl.key.password"', True),
        ('kafka.client."ssl.keystore.password"', True),
        ('kafka.client."sasl.oauthbearer.client.secret"', True),
        ('kafka.client."ssl.key.pem"', True),
        ('kafka.client."sasl.oauthbearer.config"', True),
        ("kafka.client.api_token", True),
        ("kafka.bootstrap", False),
        ("redis.url", False),  # not secret as a whole: its credentials are redacted inside
        ("redis.ssl_keyfile", False),  # a path
        ('kafka.client."ssl.key.location"', False),
        ('kafka.client."sasl.username"', False),
    ],
)
def test_secret_settings_are_known_by_name(name: str, secret: bool) -> None:
    assert config.is_secret(name) is secret
    assert (config.redact(name, "value") == REDACTED) is secret


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pw@r:6379/0", f"redis://{REDACTED}@r:6379/0"),
        ("rediss://user:pw@r:6379/0", f"rediss://{REDACTED}@r:6379/0"),
        ("https://TOKEN@host/x", f"https://{REDACTED}@host/x"),
        ("redis://u:p@ss/w,o:rd@r:1/0", f"redis://{REDACTED}@r:1/0"),  # '@', '/', ',' and ':' in the password
        ("SASL_SSL://u:p@k1:9092,SASL_SSL://u:p@k2:9092", f"SASL_SSL://{REDACTED}@k2:9092"),  # over, never under
        ("redis://r:6379/0", "redis://r:6379/0"),
        ("k1:9092,k2:9092", "k1:9092,k2:9092"),
        ("ops@example.com", "ops@example.com"),
    ],
)
def test_url_credentials_are_redacted_wherever_they_are(text: str, shown: str) -> None:
    assert config.redact("kafka.bootstrap", text) == shown
    assert config.redact("kafka.client", {"x.url": text}) == {"x.url": shown}


SECRETS = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=16).map(
    lambda s: f"Zq{s}"  # a prefix no other output holds: a secret like "true" would match by chance
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=SECRETS)
def test_a_secret_never_appears_in_either_format(tmp_path: Path, secret: str) -> None:
    quoted = json.dumps(secret, ensure_ascii=False)
    toml = (
        f"[redis]\nurl = {json.dumps(f'redis://app:{secret}@r:6379/0', ensure_ascii=False)}\n"
        "[kafka.client]\n"
        f'"sasl.password" = {quoted}\n"ssl.key.password" = {quoted}\n"ssl.keystore.password" = {quoted}\n'
        f'"sasl.oauthbearer.client.secret" = {quoted}\n"sasl.oauthbearer.config" = {quoted}\n'
        f'"sasl.oauthbearer.token.endpoint.url" = {json.dumps(f"https://id:{secret}@idp/token", ensure_ascii=False)}\n'
    ).replace("\x7f", "\\u007f")
    environ = {"STREAMER_REDIS_PASSWORD": secret, "STREAMER_KAFKA_BOOTSTRAP": f"SASL_SSL://u:{secret}@k:9092"}
    text = show(tmp_path, toml, environ)
    for form in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        assert form not in text
    assert text.count(REDACTED) == 9
    body = json.loads(show(tmp_path, toml, environ, "--json"))
    assert all(secret not in s for s in _strings(body))
    assert sum(s == REDACTED or REDACTED in s for s in _strings(body)) == 9


def test_a_bad_secret_is_not_shown_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="<redacted>") as raised:
        show(tmp_path, '[redis]\npassword = ["hunter2"]\n', {})
    assert "hunter2" not in str(raised.value)


# ---------------------------------------------------------------------------------------------- the command


def test_each_setting_is_one_line_with_its_source(tmp_path: Path) -> None:
    (tmp_path / "dev.json").write_text(json.dumps({"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://x:2/0"}))
    toml = (
        '[worker]\nbatch_max_size = 64\nengine = "batch"\n[models.pins]\nfraud = 2\n[rollout.fraud]\nenabled = true\n'
    )
    text = show(tmp_path, toml, {"STREAMER_ENGINE": "faust", "STREAMER_REDIS_URL": "redis://r:6379/0"})
    lines = {line.split(" = ")[0]: line for line in text.splitlines() if not line.startswith("#")}
    file = f"# file {tmp_path / 's.toml'}"
    assert lines["worker.batch_max_size"].startswith("worker.batch_max_size = 64 ") and lines[
        "worker.batch_max_size"
    ].endswith(file)
    assert lines["worker.engine"].startswith('worker.engine = "faust" ')
    assert lines["worker.engine"].endswith("# environment STREAMER_ENGINE")
    assert lines["worker.metrics_port"].endswith("# default")
    assert lines["models.pins.fraud"].startswith("models.pins.fraud = 2 ") and lines["models.pins.fraud"].endswith(file)
    assert lines["rollout.fraud.enabled"].endswith(file) and lines["rollout.fraud.stage"].endswith("# default")
    assert lines["kafka.bootstrap"].endswith(f"# dev stack {tmp_path / 'dev.json'}")
    assert lines["redis.url"].endswith("# environment STREAMER_REDIS_URL")
    assert lines["kafka.transactional_id"].startswith("kafka.transactional_id = null ")
    # every declared setting is shown (a setting added later too), dict settings one line per key
    shown = set(lines)
    for name in config.FIELD_TYPES:
        assert name in shown or any(s.startswith(f"{name}.") for s in shown), name


def test_json_lists_every_setting_with_its_source(tmp_path: Path) -> None:
    toml = '[kafka.client]\n"security.protocol" = "SASL_SSL"\n"sasl.password" = "hunter2"\n'
    body = json.loads(show(tmp_path, toml, {"STREAMER_BATCH_MAX_SIZE": "32", "STREAMER_TYPO": "1"}, "--json"))
    by_name = {row["setting"]: row for row in body["settings"]}
    assert len(by_name) == len(body["settings"])
    assert by_name["worker.batch_max_size"] | {} == {
        "setting": "worker.batch_max_size",
        "path": ["worker", "batch_max_size"],
        "value": 32,
        "source": "environment",
        "from": "STREAMER_BATCH_MAX_SIZE",
    }
    assert by_name['kafka.client."sasl.password"']["path"] == ["kafka", "client", "sasl.password"]
    assert by_name['kafka.client."sasl.password"']["value"] == REDACTED
    assert by_name['kafka.client."security.protocol"']["from"] == str(tmp_path / "s.toml")
    assert by_name["worker.engine"] == {
        "setting": "worker.engine",
        "path": ["worker", "engine"],
        "value": "faust",
        "source": "default",
        "from": None,
    }
    assert body["config_file"] == str(tmp_path / "s.toml")
    assert body["unknown_env"] == ["STREAMER_TYPO"]


def test_a_bad_setting_fails_show_with_the_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^worker.batch_max_size: expected int, got 'abc' \(from STREAMER_BATCH"):
        show(tmp_path, "", {"STREAMER_BATCH_MAX_SIZE": "abc"})
