"""Loading: the file, then the environment, validated once, and the embedded stack's addresses filled in."""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from streamer.config.errors import bare, error_of, optional
from streamer.config.redaction import REDACTED, is_secret
from streamer.config.schema import (
    DEFAULT_CONFIG_FILE,
    DEV_STATE_FILE,
    ENVIRONMENT,
    FIELD_TYPES,
    KNOWN_ENV,
    SECTIONS,
    FileTable,
    Settings,
    TopicSettings,
)
from streamer.config.sources import Source, setting_name, source_of
from streamer.core.errors import ConfigError
from streamer.core.names import suggestion
from streamer.core.rollout import RolloutPolicy

# ---------------------------------------------------------------------------------------------- loading

PROPERTIES_URL = "https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md"


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the config file (if any), apply the environment, validate, and fill in the embedded stack."""
    return load_with_sources(path, environ)[0]


def load_with_sources(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, Source]]:
    """``load``, and where each setting set otherwise than by default came from (``"worker.engine"`` ->
    ``Source("environment", "STREAMER_ENGINE")``; ``"rollout.NAME.key"`` for rollout tables)."""
    environ = os.environ if environ is None else environ
    table, source = _read_file(path)
    sources: dict[str, Source] = {}
    in_file = Source("file", source)
    for section, values in table.items():
        for key, value in values.items() if isinstance(values, dict) else ():
            if section == "rollout" and isinstance(value, dict):  # a policy's unset keys keep their defaults
                sources.update({setting_name(section, key, k): in_file for k in value})
            else:
                sources[setting_name(section, key)] = in_file
    merged = {section: dict(values) if isinstance(values, dict) else values for section, values in table.items()}
    for variable, (section, key) in ENVIRONMENT.items():
        if variable in environ:
            name = f"{section}.{key}"
            sources[name] = Source("environment", variable)
            value = _from_environment(environ[variable], name, sources[name])
            values = merged.setdefault(section, {})
            if isinstance(values, dict):  # otherwise the file's error is reported below
                values[key] = value
    try:
        parsed = msgspec.convert(merged, FileTable, strict=True)
    except msgspec.ValidationError as exc:
        # Environment values were converted (and bounded) one by one above: what fails here is in the file.
        raise error_of(exc, merged, FileTable, in_file) from None
    rollout = {}
    for name, table_ in parsed.rollout.items():
        policy = RolloutPolicy(**msgspec.structs.asdict(table_))
        problem = policy.problem()
        if problem is not None:
            raise ConfigError(f"{setting_name('rollout', name)}: {problem} {in_file.cause()}")
        rollout[name] = policy
    # Unknown STREAMER_* variables are reported (a typo would otherwise be silently ignored) but not fatal:
    # deployment tooling may set variables of its own with the same prefix.
    unknown_env = tuple(sorted(v for v in environ if v.startswith("STREAMER_") and v not in KNOWN_ENV))
    settings = Settings(
        **{name: getattr(parsed, name) for name in SECTIONS},
        rollout=rollout,
        source=source,
        unknown_env=unknown_env,
    )
    settings = _with_sasl_password(settings)
    _validate(settings, sources)
    _check_kafka_client(settings.kafka.client, source_of("kafka.client", sources))
    if source_of("models.dir", sources).kind != "default" and not Path(settings.models.dir).is_dir():
        raise ConfigError(
            f"models.dir: {settings.models.dir} is not a directory {source_of('models.dir', sources).cause()}"
        )
    filled = _with_dev_stack(settings)
    state_file = Source("dev stack", str(Path(settings.dev.state_dir) / DEV_STATE_FILE))
    if filled.kafka.bootstrap != settings.kafka.bootstrap:
        sources["kafka.bootstrap"] = state_file
    if filled.redis.url != settings.redis.url:
        sources["redis.url"] = state_file
    return filled, sources


def _read_file(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """The config file's table and its name (``"defaults"`` and an empty table when there is none)."""
    config_path = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
    if not config_path.exists():
        if path is not None:
            raise ConfigError(f"--config: {config_path} does not exist")
        return {}, "defaults"
    try:
        return tomllib.loads(config_path.read_text()), str(config_path)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: {exc}") from None


def _from_environment(text: str, name: str, source: Source) -> Any:
    """One variable's string as its setting's type, by msgspec's lax conversion (JSON for a dict setting)."""
    hint = FIELD_TYPES[name]
    base = bare(hint)
    if text == "" and optional(hint):
        return None
    raw: Any = text
    if typing.get_origin(base) in (dict, list):
        try:
            raw = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{name}: not JSON ({exc}) {source.cause()}") from None
    elif base in (int, float, bool):
        raw = text.strip()
        if base is bool and raw.lower() in ("yes", "no"):
            raw = str(raw.lower() == "yes").lower()
    try:
        return msgspec.convert(raw, hint, strict=False)
    except msgspec.ValidationError as exc:
        raise error_of(exc, raw, hint, source, prefix=name.split(".")) from None


# ---------------------------------------------------------------------------------------------- checks


def _validate(settings: Settings, sources: Mapping[str, Source]) -> None:
    """What one field's type and bounds cannot say: settings that must agree with each other."""

    def fail(name: str, problem: str) -> ConfigError:
        return ConfigError(f"{name}: {problem} {source_of(name, sources).cause()}")

    worker = settings.worker
    if settings.kafka.transactional and worker.engine != "batch":
        raise fail("kafka.transactional", "transactions need the batch engine (worker.engine = 'batch')")
    from streamer.core.evaluation import parse_windows

    evaluation = settings.evaluation
    try:
        windows = {w.name for w in parse_windows(evaluation.windows, "evaluation.windows")}
    except ConfigError as exc:
        raise ConfigError(f"{exc} {source_of('evaluation.windows', sources).cause()}") from None
    if evaluation.floor_window not in windows:
        raise fail("evaluation.floor_window", f"{evaluation.floor_window!r} is not one of evaluation.windows")
    for name, shares in settings.models.canary.items():
        for version, weight in shares.items():
            if not version.isdigit() or not 0 < weight <= 1:
                problem = f"{version!r} = {weight} is not a version = share in (0, 1]"
                raise fail(setting_name("models", "canary", name), problem)
    for name, policy in settings.rollout.items():
        if policy.window not in windows:
            raise fail(setting_name("rollout", name, "window"), f"{policy.window!r} is not one of evaluation.windows")
    seen: dict[str, str] = {}
    for field in msgspec.structs.fields(TopicSettings):
        topic = getattr(settings.topics, field.name)
        if not topic or topic in seen:
            also = f"{topic!r} is also topics.{seen[topic]}" if topic else "empty"
            raise fail(f"topics.{field.name}", f"{also}: topic names must be distinct and non-empty")
        seen[topic] = field.name


def _check_kafka_client(client: Mapping[str, Any], source: Source) -> None:
    """``[kafka.client]`` as librdkafka judges it (``adapters.librdkafka_config``): every property known and its
    value taken. One line naming the property, with a suggestion for a misspelt one; a secret's value never
    appears. What librdkafka checks only when it creates a client (a TLS file that is missing, a SASL mechanism
    this build lacks) depends on the machine, not on the settings: ``config show`` of a deployment's settings
    works anywhere, and the first client a command creates says it in one line (``kafka_admin.new_client``)."""
    if not client:
        return
    # confluent-kafka is imported only when there is something to ask it (config show, --help stay light)
    from streamer.adapters import librdkafka_config

    def clean(text: str) -> str:
        for key, value in client.items():
            if is_secret(key) and str(value):
                text = text.replace(str(value), REDACTED)
        return text

    for key, value in client.items():
        problem = librdkafka_config.property_problem(key, value)
        if problem is None:
            continue
        name = setting_name("kafka", "client", key)
        if librdkafka_config.unknown_property(problem):
            close = suggestion(key, librdkafka_config.property_names())
            advice = f"did you mean {close!r}?" if close else f"librdkafka's properties are listed in {PROPERTIES_URL}"
            raise ConfigError(f"unknown setting {name} {source.cause()}: not a librdkafka property; {advice}")
        raise ConfigError(f"{name}: librdkafka refuses it: {clean(problem)} {source.cause()}")


def _with_sasl_password(settings: Settings) -> Settings:
    """``kafka.sasl_password`` set as ``kafka.client["sasl.password"]`` (over the file's), so that every Kafka
    client, which all take ``kafka.client``, authenticates with it; the secret stays out of the config file."""
    kafka = settings.kafka
    if kafka.sasl_password is None:
        return settings
    client = {**kafka.client, "sasl.password": kafka.sasl_password}
    return msgspec.structs.replace(settings, kafka=msgspec.structs.replace(kafka, client=client))


def _with_dev_stack(settings: Settings) -> Settings:
    """Fill unset Kafka/Redis addresses from the state file ``streamer dev up`` writes."""
    if settings.kafka.bootstrap and settings.redis.url:
        return settings
    state_file = Path(settings.dev.state_dir) / DEV_STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return settings
    if not isinstance(state, dict):
        return settings
    kafka = settings.kafka
    redis = settings.redis
    if not kafka.bootstrap and isinstance(state.get("kafka_bootstrap"), str):
        kafka = msgspec.structs.replace(kafka, bootstrap=state["kafka_bootstrap"])
    if not redis.url and isinstance(state.get("redis_url"), str):
        redis = msgspec.structs.replace(redis, url=state["redis_url"])
    return msgspec.structs.replace(settings, kafka=kafka, redis=redis)
