"""The settings as declared: one frozen msgspec struct per ``[section]``, with types, defaults and bounds, and
the environment variables that set them. Declared once; loading, errors and ``config show`` derive from it."""

from __future__ import annotations

import dataclasses
import os
import socket
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from streamer.core.batching import BatchPolicy
from streamer.core.errors import ConfigError
from streamer.core.rollout import RolloutPolicy

DEFAULT_CONFIG_FILE = "streamer.toml"
DEV_STATE_FILE = "dev.json"

# Bounds, checked by msgspec as it converts (a value built in code is not checked: tests build what they like).
Engine = Literal["faust", "batch"]
ENGINES: tuple[str, ...] = typing.get_args(Engine)
AtLeastOne = Annotated[int, Meta(ge=1)]
NotNegative = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
Seconds = Annotated[float, Meta(gt=0)]
SecondsOrZero = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A ``[section]`` of the config file: immutable, typed, unknown keys refused."""


class KafkaSettings(_Section):
    bootstrap: str | None = None
    # Passed verbatim to every confluent-kafka client (and translated for Faust): security, TLS, SASL, tuning.
    client: dict[str, Any] = msgspec.field(default_factory=dict)
    # The SASL password without putting it in the config file (a Kubernetes Secret, say, through
    # STREAMER_KAFKA_SASL_PASSWORD): loading sets it as ``client["sasl.password"]``, over the file's.
    sasl_password: str | None = None
    partitions: AtLeastOne = 8
    replication_factor: AtLeastOne = 1
    # Short group timeouts keep joins to a few seconds on the embedded broker (a first join there takes about
    # half of session_timeout_ms). On a production Kafka cluster 10-45 s sessions are usual: raise them there.
    session_timeout_ms: int = 6000
    # At start the worker waits this long for the broker (a log line per attempt, every startup_retry_s) before
    # it exits 6; a broker that restarts with the worker's pod is then not a crash loop. 0: try once.
    startup_timeout_s: SecondsOrZero = 300.0
    startup_retry_s: Seconds = 5.0
    # A consumer, producer or group error that does not clear within this bound stops the worker (exit 7) with one
    # line naming the cause and the fix, instead of leaving it alive and unready: another engine's protocol on the
    # group, an authorization refusal, an unknown request topic, no place in the group, partitions behind that
    # fetch nothing (core.kafka_faults).
    error_timeout_s: Seconds = 60.0
    heartbeat_interval_ms: int = 1000
    rebalance_timeout_ms: int = 6000
    # The broker answers a fetch only after this wait even when data is there (measured on Tansu): keep it low.
    fetch_wait_max_ms: int = 5
    # Faust engine: the fetch wait while the consumer is behind (core.intake: two chunks in a row not at the high
    # watermark and full, or a chunk's worth behind), where larger fetches cost less per message than low latency
    # buys; back to fetch_wait_max_ms at the first chunk that is not behind. librdkafka (the batch engine) reads its
    # fetch wait once, when its consumer is created: it keeps fetch_wait_max_ms.
    fetch_wait_backlog_ms: int = 500
    # The largest output record (a dead letter carries the request's bytes). 0: each output topic's
    # max.message.bytes as the broker reports it, or 64 MiB where it reports none (the embedded broker).
    max_output_bytes: NotNegative = 0
    linger_ms: int = 5
    # Batch engine only: produce outputs and commit offsets in one transaction (fences zombie workers on Apache
    # Kafka). Off by default: the embedded broker shows aborted transactions and never times out a killed
    # producer's open one (measured), and the read-back recovery gives exactly-once without transactions.
    transactional: bool = False
    # Stable per worker instance (a pod name, say): a restarted instance re-initialises, and so closes, the
    # transaction its previous incarnation left open. Default: "<group>-<hostname>".
    transactional_id: str | None = None
    transaction_interval_ms: int = 100


class TopicSettings(_Section):
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


class RedisSettings(_Section):
    # ``redis://[user:password@]host:port/db`` (AUTH), ``rediss://...`` for TLS.
    url: str | None = None
    # AUTH without putting the secret in the URL (overrides the URL's password).
    password: str | None = None
    # TLS (with a rediss:// URL): the CA that signed the server's certificate, and a client certificate for mTLS.
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # How long a logged prediction waits for its label (contract section 4: seconds to days).
    prediction_ttl_s: AtLeastOne = 7 * 86400
    # Predictions waiting to be logged while Redis is unreachable; beyond it the oldest are dropped and counted.
    max_queued_predictions: int = 200_000
    key_prefix: str = "streamer"


class EvaluationSettings(_Section):
    # Rolling windows, each "<number><s|m|h|d>", cut into 12 buckets.
    windows: str = "5m,1h,24h"
    # Alert (metric + model-events) when the serving version's accuracy in ``floor_window`` falls under this
    # floor with at least ``min_labels`` labels in the window; 0 switches the check off.
    accuracy_floor: Fraction = 0.0
    floor_window: str = "5m"
    min_labels: int = 100
    # Feature drift: PSI of the served features against the card's [reference], per worker, computed every
    # ``drift_interval_s`` once ``drift_min_rows`` rows were served; an event above ``psi_threshold``.
    psi_threshold: float = 0.25
    drift_interval_s: float = 30.0
    drift_min_rows: int = 1000
    # How often each worker reads the shared rolling metrics (Prometheus gauges) and checks the floor.
    check_interval_s: float = 5.0


class OnlineSettings(_Section):
    # Bounded staleness: scoring workers reload an online model's shared weights at least this often.
    refresh_ms: AtLeastOne = 1000


class ModelSettings(_Section):
    dir: str = "models"
    default: str | None = None
    # Model name -> version to serve instead of the highest one.
    pins: dict[str, int] = msgspec.field(default_factory=dict)
    # Model name -> {version: share of keys}: a canary split, sticky per request key; the champion (pin or
    # highest) takes the share the others leave.
    canary: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    # Model name -> challenger version scoring beside the champion; its outputs go to topics.shadow.
    shadow: dict[str, int] = msgspec.field(default_factory=dict)
    # Hot reload: watch models.dir (inotify, and a scan at least every watch_interval_s); a new version is read
    # once its card and model are unchanged for settle_s.
    watch: bool = True
    watch_interval_s: Seconds = 2.0
    settle_s: SecondsOrZero = 1.0
    # How often a worker reads the shared serving state (promotions, rollbacks, pins) from Redis.
    control_interval_s: Seconds = 1.0
    # Declared scoring graphs (graphs/<name>.toml); empty: the "graphs" directory beside models.dir, if any.
    graphs_dir: str = ""


class WorkerSettings(_Section):
    engine: Engine = "faust"
    group_id: str = "streamer"
    # This worker's id in model events, its start log line and /ready: empty = "<host>:<pid>", unique among
    # the workers of one host; set it (a pod name, say) for an id that survives restarts.
    name: str = ""
    metrics_port: Port = 9464
    # Where /metrics, /health and /ready listen. Loopback by default: the dev stack and tests need nothing
    # else, and a laptop's worker should not serve its metrics to the network. The container image and
    # docker-compose set STREAMER_METRICS_HOST=0.0.0.0 so that Prometheus and the orchestrator's probes reach it.
    metrics_host: str = "127.0.0.1"
    batch_max_size: AtLeastOne = 256
    batch_max_wait_ms: SecondsOrZero = 5.0
    max_message_bytes: AtLeastOne = 1_048_576
    max_rows_per_request: AtLeastOne = 10_000
    intra_op_num_threads: AtLeastOne = 1
    scoring_threads: NotNegative = 0
    max_inflight_batches: AtLeastOne = 4
    # Close a partition's batch as soon as the consumer has nothing more buffered (no idle wait under light
    # load); batch_max_wait_ms stays the upper bound under a backlog.
    batch_close_when_drained: bool = True
    # A partition holding work without progress this long stops the worker (exit 5) for its replacement.
    stall_timeout_s: Seconds = 60.0
    # How often the request and output topics are checked (exist, same partition count), from a thread of its own
    # (one metadata request): the embedded broker acknowledges writes to a deleted topic, so at 200 outputs/s this
    # bounds what goes into the void to a few hundred (measured: tests/e2e/test_no_stall.py).
    topic_check_interval_s: Seconds = 2.0
    # Open Inference Protocol v2 (KServe v2) over HTTP beside the stream (``streamer serve`` serves it alone):
    # 0 (the default) = off for the worker, so that several workers on one host never fight over a port.
    # Loopback unless configured, like the metrics (in a container: STREAMER_OIP_HOST=0.0.0.0).
    oip_port: Port = 0
    oip_host: str = "127.0.0.1"
    # How long a stopping worker (SIGTERM, SIGINT) waits for the batches it holds to be scored and delivered
    # before it commits and exits; past it they are abandoned, re-read by the next owner and de-duplicated. An
    # orchestrator's grace period must cover it (deploy/kubernetes: terminationGracePeriodSeconds).
    drain_timeout_s: Seconds = 20.0
    # Bounds of the OIP server: open connections (past it, the one idle the longest is closed; with none idle, a
    # 503), and requests waiting for or in scoring (past it, a 503). 512 stays below a usual limit of 1,024
    # open files with room for the worker's own.
    oip_max_connections: AtLeastOne = 512
    oip_max_queued: AtLeastOne = 1024

    def worker_id(self) -> str:
        """``name``, else ``<host>:<pid>``: two workers on one host never share an id."""
        return self.name or f"{socket.gethostname()}:{os.getpid()}"

    def batch_policy(self) -> BatchPolicy:
        """The micro-batch policy of both serving modes (the stream's partitions, on-demand requests)."""
        return BatchPolicy(self.batch_max_size, self.batch_max_wait_ms / 1000.0, self.batch_close_when_drained)


class DevSettings(_Section):
    state_dir: str = ".streamer"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    kafka: KafkaSettings = msgspec.field(default_factory=KafkaSettings)
    topics: TopicSettings = msgspec.field(default_factory=TopicSettings)
    redis: RedisSettings = msgspec.field(default_factory=RedisSettings)
    evaluation: EvaluationSettings = msgspec.field(default_factory=EvaluationSettings)
    online: OnlineSettings = msgspec.field(default_factory=OnlineSettings)
    models: ModelSettings = msgspec.field(default_factory=ModelSettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    dev: DevSettings = msgspec.field(default_factory=DevSettings)
    # ``[rollout.NAME]``: label-driven promotion and rollback of NAME's new versions (off unless enabled).
    rollout: dict[str, RolloutPolicy] = msgspec.field(default_factory=dict)
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


SECTIONS: dict[str, type[_Section]] = {
    "kafka": KafkaSettings,
    "topics": TopicSettings,
    "redis": RedisSettings,
    "evaluation": EvaluationSettings,
    "online": OnlineSettings,
    "models": ModelSettings,
    "worker": WorkerSettings,
    "dev": DevSettings,
}

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
    "STREAMER_KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    "STREAMER_ACCURACY_FLOOR": ("evaluation", "accuracy_floor"),
    "STREAMER_ONLINE_REFRESH_MS": ("online", "refresh_ms"),
    "STREAMER_MODELS_DIR": ("models", "dir"),
    "STREAMER_DEFAULT_MODEL": ("models", "default"),
    "STREAMER_ENGINE": ("worker", "engine"),
    "STREAMER_GROUP_ID": ("worker", "group_id"),
    "STREAMER_WORKER_NAME": ("worker", "name"),
    "STREAMER_METRICS_PORT": ("worker", "metrics_port"),
    "STREAMER_METRICS_HOST": ("worker", "metrics_host"),
    "STREAMER_OIP_PORT": ("worker", "oip_port"),
    "STREAMER_OIP_HOST": ("worker", "oip_host"),
    "STREAMER_BATCH_MAX_SIZE": ("worker", "batch_max_size"),
    "STREAMER_BATCH_MAX_WAIT_MS": ("worker", "batch_max_wait_ms"),
    "STREAMER_STATE_DIR": ("dev", "state_dir"),
}

# Variables read outside the settings (the config file's path, logging) are known too.
KNOWN_ENV = frozenset(ENVIRONMENT) | {"STREAMER_CONFIG", "STREAMER_LOG_LEVEL", "STREAMER_LOG_JSON"}

# "section.key" -> the field's declared type (with its bounds), for the environment's lax conversion.
FIELD_TYPES: dict[str, Any] = {
    f"{section}.{f.name}": f.type for section, cls in SECTIONS.items() for f in msgspec.structs.fields(cls)
}

# ``[rollout.NAME]`` is checked like a section: a Struct with RolloutPolicy's fields, unknown keys refused
# (msgspec ignores unknown keys when it builds a dataclass), then turned into the RolloutPolicy of core.
_ROLLOUT_HINTS = typing.get_type_hints(RolloutPolicy)
_RolloutTable = msgspec.defstruct(
    "RolloutTable",
    [(f.name, _ROLLOUT_HINTS[f.name], f.default) for f in dataclasses.fields(RolloutPolicy)],
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
)
# The config file as a whole: its sections, and the rollout tables.
FileTable = msgspec.defstruct(
    "File",
    [(name, cls, msgspec.field(default_factory=cls)) for name, cls in SECTIONS.items()]
    + [("rollout", dict[str, _RolloutTable], msgspec.field(default_factory=dict))],
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
)
