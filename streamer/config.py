"""Settings: a TOML file overridden by ``STREAMER_*`` environment variables, validated once, passed as values.

Precedence (contract section 1): environment variable, then the config file (``--config``, default
``streamer.toml`` when present), then the default. Every default works with the embedded stack of
``streamer dev up``, whose addresses are read from its state file when Kafka or Redis are not configured.

Validation is strict and happens here, before anything connects: an unknown section or key, a value of the
wrong type, an engine that does not exist or an explicitly configured path that does not exist is a
``ConfigError`` naming the setting and where it came from. Adapters receive the typed sections and never read
the environment themselves.

Kafka security (SASL/TLS) passes through ``[kafka.client]``: any librdkafka property there (for example
``"security.protocol" = "SASL_SSL"``) reaches every Kafka client streamer creates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.core.errors import ConfigError
from streamer.core.rollout import RolloutPolicy

DEFAULT_CONFIG_FILE = "streamer.toml"
ENGINES = ("faust", "batch")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap: str | None = None
    # Passed verbatim to every confluent-kafka client (and translated for Faust): security, TLS, SASL, tuning.
    client: dict[str, Any] = field(default_factory=dict)
    partitions: int = 8
    replication_factor: int = 1
    # Short group timeouts keep joins to a few seconds on the embedded broker (a first join there takes about
    # half of session_timeout_ms). On a production Kafka cluster 10-45 s sessions are usual: raise them there.
    session_timeout_ms: int = 6000
    # At start the worker waits this long for the broker (a log line per attempt, every startup_retry_s) before
    # it exits 6; a broker that restarts with the worker's pod is then not a crash loop. 0: try once.
    startup_timeout_s: float = 300.0
    startup_retry_s: float = 5.0
    heartbeat_interval_ms: int = 1000
    rebalance_timeout_ms: int = 6000
    # The broker answers a fetch only after this wait even when data is there (measured on Tansu): keep it low.
    fetch_wait_max_ms: int = 5
    # Faust engine: the fetch wait while the consumer returns full chunks (a backlog), where larger fetches cost
    # less per message than low latency buys; back to fetch_wait_max_ms as soon as a chunk comes back short.
    fetch_wait_backlog_ms: int = 500
    # The largest output record (a dead letter carries the request's bytes). 0: each output topic's
    # max.message.bytes as the broker reports it, or 64 MiB where it reports none (the embedded broker).
    max_output_bytes: int = 0
    linger_ms: int = 5
    # Batch engine only: produce outputs and commit offsets in one transaction (fences zombie workers on Apache
    # Kafka). Off by default: the embedded broker shows aborted transactions and never times out a killed
    # producer's open one (measured), and the read-back recovery gives exactly-once without transactions.
    transactional: bool = False
    # Stable per worker instance (a pod name, say): a restarted instance re-initialises, and so closes, the
    # transaction its previous incarnation left open. Default: "<group>-<hostname>".
    transactional_id: str | None = None
    transaction_interval_ms: int = 100


@dataclass(frozen=True, slots=True)
class TopicSettings:
    requests: str = "requests"
    predictions: str = "predictions"
    feedback: str = "feedback"
    dlq: str = "requests.dlq"
    # Drift and accuracy-floor events (JSON, keyed by model name); an extension of the contract's four topics.
    model_events: str = "model-events"
    # Challengers' predictions (shadow scoring): never on the predictions topic.
    shadow: str = "predictions.shadow"

    def all(self) -> tuple[str, ...]:
        return (self.requests, self.predictions, self.feedback, self.dlq, self.model_events, self.shadow)


@dataclass(frozen=True, slots=True)
class RedisSettings:
    # ``redis://[user:password@]host:port/db`` (AUTH), ``rediss://...`` for TLS.
    url: str | None = None
    # AUTH without putting the secret in the URL (overrides the URL's password).
    password: str | None = None
    # TLS (with a rediss:// URL): the CA that signed the server's certificate, and a client certificate for mTLS.
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # How long a logged prediction waits for its label (contract section 4: seconds to days).
    prediction_ttl_s: int = 7 * 86400
    # Predictions waiting to be logged while Redis is unreachable; beyond it the oldest are dropped and counted.
    max_queued_predictions: int = 200_000
    key_prefix: str = "streamer"


@dataclass(frozen=True, slots=True)
class EvaluationSettings:
    # Rolling windows, each "<number><s|m|h|d>", cut into 12 buckets.
    windows: str = "5m,1h,24h"
    # Alert (metric + model-events) when the serving version's accuracy in ``floor_window`` falls under this
    # floor with at least ``min_labels`` labels in the window; 0 switches the check off.
    accuracy_floor: float = 0.0
    floor_window: str = "5m"
    min_labels: int = 100
    # Feature drift: PSI of the served features against the card's [reference], per worker, computed every
    # ``drift_interval_s`` once ``drift_min_rows`` rows were served; an event above ``psi_threshold``.
    psi_threshold: float = 0.25
    drift_interval_s: float = 30.0
    drift_min_rows: int = 1000
    # How often each worker reads the shared rolling metrics (Prometheus gauges) and checks the floor.
    check_interval_s: float = 5.0


@dataclass(frozen=True, slots=True)
class OnlineSettings:
    # Bounded staleness: scoring workers reload an online model's shared weights at least this often.
    refresh_ms: int = 1000


@dataclass(frozen=True, slots=True)
class ModelSettings:
    dir: str = "models"
    default: str | None = None
    # Model name -> version to serve instead of the highest one.
    pins: dict[str, int] = field(default_factory=dict)
    # Model name -> {version: share of keys}: a canary split, sticky per request key; the champion (pin or
    # highest) takes the share the others leave.
    canary: dict[str, dict[str, float]] = field(default_factory=dict)
    # Model name -> challenger version scoring beside the champion; its outputs go to topics.shadow.
    shadow: dict[str, int] = field(default_factory=dict)
    # Hot reload: watch models.dir (inotify, and a scan at least every watch_interval_s); a new version is read
    # once its card and model are unchanged for settle_s.
    watch: bool = True
    watch_interval_s: float = 2.0
    settle_s: float = 1.0
    # How often a worker reads the shared serving state (promotions, rollbacks, pins) from Redis.
    control_interval_s: float = 1.0
    # Declared scoring graphs (graphs/<name>.toml); empty: the "graphs" directory beside models.dir, if any.
    graphs_dir: str = ""


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    engine: str = "faust"
    group_id: str = "streamer"
    metrics_port: int = 9464
    # Where /metrics, /health and /ready listen. Loopback by default: the dev stack and tests need nothing
    # else, and a laptop's worker should not serve its metrics to the network. The container image and
    # docker-compose set STREAMER_METRICS_HOST=0.0.0.0 so that Prometheus and the orchestrator's probes reach it.
    metrics_host: str = "127.0.0.1"
    batch_max_size: int = 256
    batch_max_wait_ms: float = 5.0
    max_message_bytes: int = 1_048_576
    max_rows_per_request: int = 10_000
    intra_op_num_threads: int = 1
    scoring_threads: int = 0
    max_inflight_batches: int = 4
    # Close a partition's batch as soon as the consumer has nothing more buffered (no idle wait under light
    # load); batch_max_wait_ms stays the upper bound under a backlog.
    batch_close_when_drained: bool = True
    # A partition holding work without progress this long stops the worker (exit 5) for its replacement.
    stall_timeout_s: float = 60.0
    # How often the output topics are checked (exist, same partition count as the request topic).
    topic_check_interval_s: float = 10.0
    # Open Inference Protocol v2 (KServe v2) over HTTP beside the stream (``streamer serve`` serves it alone):
    # 0 (the default) = off for the worker, so that several workers on one host never fight over a port.
    # Loopback unless configured, like the metrics (in a container: STREAMER_OIP_HOST=0.0.0.0).
    oip_port: int = 0
    oip_host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class DevSettings:
    state_dir: str = ".streamer"


@dataclass(frozen=True, slots=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    online: OnlineSettings = field(default_factory=OnlineSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    # ``[rollout.NAME]``: label-driven promotion and rollback of NAME's new versions (off unless enabled).
    rollout: dict[str, RolloutPolicy] = field(default_factory=dict)
    source: str = "defaults"
    unknown_env: tuple[str, ...] = ()

    def require_bootstrap(self) -> str:
        if not self.kafka.bootstrap:
            raise ConfigError(
                "no Kafka bootstrap servers: set STREAMER_KAFKA_BOOTSTRAP, kafka.bootstrap in the config file, "
                "or start the embedded stack with `streamer dev up`"
            )
        return self.kafka.bootstrap

    def require_redis_url(self) -> str:
        if not self.redis.url:
            raise ConfigError(
                "no Redis URL: set STREAMER_REDIS_URL, redis.url in the config file, "
                "or start the embedded stack with `streamer dev up`"
            )
        return self.redis.url

    def require_models_dir(self) -> Path:
        path = Path(self.models.dir)
        if not path.is_dir():
            raise ConfigError(f"models.dir: {path} is not a directory (set STREAMER_MODELS_DIR or models.dir)")
        return path


# Contract section 1: environment variable -> (section, key).
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "STREAMER_KAFKA_BOOTSTRAP": ("kafka", "bootstrap"),
    "STREAMER_REDIS_URL": ("redis", "url"),
    "STREAMER_REQUESTS_TOPIC": ("topics", "requests"),
    "STREAMER_PREDICTIONS_TOPIC": ("topics", "predictions"),
    "STREAMER_FEEDBACK_TOPIC": ("topics", "feedback"),
    "STREAMER_DLQ_TOPIC": ("topics", "dlq"),
    "STREAMER_MODEL_EVENTS_TOPIC": ("topics", "model_events"),
    "STREAMER_SHADOW_TOPIC": ("topics", "shadow"),
    "STREAMER_REDIS_PASSWORD": ("redis", "password"),
    "STREAMER_ACCURACY_FLOOR": ("evaluation", "accuracy_floor"),
    "STREAMER_ONLINE_REFRESH_MS": ("online", "refresh_ms"),
    "STREAMER_MODELS_DIR": ("models", "dir"),
    "STREAMER_DEFAULT_MODEL": ("models", "default"),
    "STREAMER_ENGINE": ("worker", "engine"),
    "STREAMER_GROUP_ID": ("worker", "group_id"),
    "STREAMER_METRICS_PORT": ("worker", "metrics_port"),
    "STREAMER_METRICS_HOST": ("worker", "metrics_host"),
    "STREAMER_OIP_PORT": ("worker", "oip_port"),
    "STREAMER_OIP_HOST": ("worker", "oip_host"),
    "STREAMER_BATCH_MAX_SIZE": ("worker", "batch_max_size"),
    "STREAMER_BATCH_MAX_WAIT_MS": ("worker", "batch_max_wait_ms"),
    "STREAMER_STATE_DIR": ("dev", "state_dir"),
}

# Variables read outside the settings (the config file's path, logging) are known too.
_KNOWN_ENV = frozenset(ENVIRONMENT) | {"STREAMER_CONFIG", "STREAMER_LOG_LEVEL", "STREAMER_LOG_JSON"}


def _section_types() -> dict[str, dict[str, Any]]:
    return {name: typing.get_type_hints(cls) for name, cls in _SECTION_CLASSES.items()}


_SECTION_CLASSES: dict[str, type] = {
    "kafka": KafkaSettings,
    "topics": TopicSettings,
    "redis": RedisSettings,
    "evaluation": EvaluationSettings,
    "online": OnlineSettings,
    "models": ModelSettings,
    "worker": WorkerSettings,
    "dev": DevSettings,
}


def _coerce(value: Any, hint: Any, where: str, from_env: bool) -> Any:
    """Check ``value`` against the field's type; environment strings are parsed into it first."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(value, options[0], where, from_env)
    if hint is bool:
        if from_env and isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool):
            return value
    elif hint is int:
        if from_env and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if from_env and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is dict:
        if from_env and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        if isinstance(value, dict):
            _, value_type = typing.get_args(hint)
            return {str(k): _coerce(v, value_type, f"{where}.{k}", False) for k, v in value.items()}
    elif hint is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _validate(settings: Settings) -> None:
    worker = settings.worker
    if worker.engine not in ENGINES:
        raise ConfigError(f"worker.engine: {worker.engine!r} is not one of {', '.join(ENGINES)}")
    positive = {
        "worker.batch_max_size": worker.batch_max_size,
        "worker.max_message_bytes": worker.max_message_bytes,
        "worker.max_rows_per_request": worker.max_rows_per_request,
        "worker.intra_op_num_threads": worker.intra_op_num_threads,
        "worker.max_inflight_batches": worker.max_inflight_batches,
        "kafka.partitions": settings.kafka.partitions,
        "kafka.replication_factor": settings.kafka.replication_factor,
    }
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name}: must be at least 1, got {value}")
    if settings.kafka.transactional and worker.engine != "batch":
        raise ConfigError("kafka.transactional: transactions need the batch engine (worker.engine = 'batch')")
    if worker.scoring_threads < 0:
        raise ConfigError(f"worker.scoring_threads: must not be negative, got {worker.scoring_threads}")
    if worker.stall_timeout_s <= 0 or worker.topic_check_interval_s <= 0:
        raise ConfigError("worker.stall_timeout_s and worker.topic_check_interval_s must be positive")
    if settings.kafka.startup_timeout_s < 0 or settings.kafka.startup_retry_s <= 0:
        raise ConfigError("kafka.startup_timeout_s must not be negative and kafka.startup_retry_s must be positive")
    if settings.kafka.max_output_bytes < 0:
        raise ConfigError(f"kafka.max_output_bytes: must not be negative, got {settings.kafka.max_output_bytes}")
    if worker.batch_max_wait_ms < 0:
        raise ConfigError(f"worker.batch_max_wait_ms: must not be negative, got {worker.batch_max_wait_ms}")
    if not 0 <= worker.metrics_port <= 65535:
        raise ConfigError(f"worker.metrics_port: {worker.metrics_port} is not a port")
    from streamer.core.evaluation import parse_windows

    evaluation = settings.evaluation
    windows = parse_windows(evaluation.windows, "evaluation.windows")
    if evaluation.floor_window not in {w.name for w in windows}:
        raise ConfigError(f"evaluation.floor_window: {evaluation.floor_window!r} is not one of evaluation.windows")
    if not 0.0 <= evaluation.accuracy_floor <= 1.0:
        raise ConfigError(f"evaluation.accuracy_floor: must be in [0, 1], got {evaluation.accuracy_floor}")
    if settings.online.refresh_ms < 1 or settings.redis.prediction_ttl_s < 1:
        raise ConfigError("online.refresh_ms and redis.prediction_ttl_s must be at least 1")
    models = settings.models
    for name, shares in models.canary.items():
        for version, weight in shares.items():
            if not version.isdigit() or not 0 < weight <= 1:
                raise ConfigError(f"models.canary.{name}: {version!r} = {weight} is not a version = share in (0, 1]")
    if models.watch_interval_s <= 0 or models.settle_s < 0 or models.control_interval_s <= 0:
        raise ConfigError("models.watch_interval_s and models.control_interval_s must be positive, settle_s >= 0")
    for name, policy in settings.rollout.items():
        if policy.window not in {w.name for w in windows}:
            raise ConfigError(f"rollout.{name}.window: {policy.window!r} is not one of evaluation.windows")
    names = settings.topics.all()
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"topics: names must be distinct and non-empty, got {', '.join(names)}")


def load(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the config file (if any), apply the environment, validate, and fill in the embedded stack."""
    environ = os.environ if environ is None else environ
    table: dict[str, Any] = {}
    explicit_path = path is not None
    config_path = Path(path) if path is not None else Path(DEFAULT_CONFIG_FILE)
    if config_path.exists():
        try:
            table = tomllib.loads(config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_path}: {exc}") from None
        source = str(config_path)
    elif explicit_path:
        raise ConfigError(f"--config: {config_path} does not exist")
    else:
        source = "defaults"
    hints = _section_types()
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTION_CLASSES}
    explicit: set[tuple[str, str]] = set()
    rollout: dict[str, RolloutPolicy] = {}
    for section, values in table.items():
        if section == "rollout":
            rollout = _rollout_policies(values, source)
            continue
        if section not in _SECTION_CLASSES:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(_SECTION_CLASSES)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in values.items():
            if key not in hints[section]:
                raise ConfigError(f"{source}: unknown setting {section}.{key}")
            sections[section][key] = _coerce(value, hints[section][key], f"{source}: {section}.{key}", False)
            explicit.add((section, key))
    for variable, (section, key) in ENVIRONMENT.items():
        if variable in environ:
            sections[section][key] = _coerce(environ[variable], hints[section][key], variable, True)
            explicit.add((section, key))
    # Unknown STREAMER_* variables are reported (a typo would otherwise be silently ignored) but not fatal:
    # deployment tooling may set variables of its own with the same prefix.
    unknown_env = tuple(sorted(v for v in environ if v.startswith("STREAMER_") and v not in _KNOWN_ENV))
    settings = Settings(
        **{name: cls(**sections[name]) for name, cls in _SECTION_CLASSES.items()},
        rollout=rollout,
        source=source,
        unknown_env=unknown_env,
    )
    _validate(settings)
    if ("models", "dir") in explicit:
        settings.require_models_dir()
    return _with_dev_stack(settings)


def _rollout_policies(table: Any, source: str) -> dict[str, RolloutPolicy]:
    """``[rollout.NAME]`` tables, each checked like a section."""
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError(f"{source}: [rollout] holds one table per model, e.g. [rollout.fraud]")
    hints = typing.get_type_hints(RolloutPolicy)
    policies = {}
    for name, values in table.items():
        for key in values:
            if key not in hints:
                raise ConfigError(f"{source}: unknown setting rollout.{name}.{key} (known: {', '.join(hints)})")
        policy = RolloutPolicy(
            **{k: _coerce(v, hints[k], f"{source}: rollout.{name}.{k}", False) for k, v in values.items()}
        )
        problem = policy.problem()
        if problem is not None:
            raise ConfigError(f"{source}: rollout.{name}: {problem}")
        policies[str(name)] = policy
    return policies


def _with_dev_stack(settings: Settings) -> Settings:
    """Fill unset Kafka/Redis addresses from the state file ``streamer dev up`` writes."""
    if settings.kafka.bootstrap and settings.redis.url:
        return settings
    state_file = Path(settings.dev.state_dir) / "dev.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return settings
    kafka = settings.kafka
    redis = settings.redis
    if not kafka.bootstrap and isinstance(state.get("kafka_bootstrap"), str):
        kafka = dataclasses.replace(kafka, bootstrap=state["kafka_bootstrap"])
    if not redis.url and isinstance(state.get("redis_url"), str):
        redis = dataclasses.replace(redis, url=state["redis_url"])
    return dataclasses.replace(settings, kafka=kafka, redis=redis)
