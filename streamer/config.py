"""Settings: a TOML file overridden by ``STREAMER_*`` environment variables, validated once, passed as values.

Why it looks like this: every setting is a field of a frozen ``msgspec.Struct`` section, declared once with
its type, its default and (``Meta``) its bounds; msgspec does the converting and checking that used to be
hand-written, and this module only translates msgspec's errors (``... - at `$.worker.batch_max_size```) into
one line naming the setting and where its value came from. Adapters receive the typed sections and never read
the environment themselves. ``streamer config show`` (streamer/config_show.py) prints the effective settings
with their sources, secrets redacted (``redact``).

Precedence (contract section 1), per setting: environment variable, then the config file (``--config``,
default ``streamer.toml`` when present), then the default. A dict setting (``kafka.client``, ``models.pins``)
is replaced whole by the higher source, never merged. Every default works with the embedded stack of
``streamer dev up``, whose addresses are read from its state file when Kafka or Redis are not configured.

Invariants (tests/unit/test_config*.py):

- Nothing is coerced by hand. File values are typed by TOML and converted strictly (``batch_max_size = "64"``
  is an error, ``batch_max_wait_ms = 5`` is 5.0); environment values are strings, converted by msgspec's lax
  mode: numbers as JSON numbers (surrounding blanks ignored), booleans ``true/false/1/0`` (and ``yes/no``),
  an empty string is "unset" for an optional setting, and a dict setting is JSON.
- Validation happens here, before anything connects: an unknown section or key, a value of the wrong type or
  out of its bounds, an engine that does not exist, settings that contradict each other or an explicitly
  configured path that does not exist is a ``ConfigError`` of one line, ``<setting>: <problem> (from
  <STREAMER_VAR or the file>)``, that never shows a secret's value.
- ``load`` reads only the config file and the dev stack's state file; it writes, creates and connects nothing.

Kafka security (SASL/TLS) passes through ``[kafka.client]``: any librdkafka property there (for example
``"security.protocol" = "SASL_SSL"``) reaches every Kafka client streamer creates.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

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
    partitions: AtLeastOne = 8
    replication_factor: AtLeastOne = 1
    # Short group timeouts keep joins to a few seconds on the embedded broker (a first join there takes about
    # half of session_timeout_ms). On a production Kafka cluster 10-45 s sessions are usual: raise them there.
    session_timeout_ms: int = 6000
    # At start the worker waits this long for the broker (a log line per attempt, every startup_retry_s) before
    # it exits 6; a broker that restarts with the worker's pod is then not a crash loop. 0: try once.
    startup_timeout_s: SecondsOrZero = 300.0
    startup_retry_s: Seconds = 5.0
    heartbeat_interval_ms: int = 1000
    rebalance_timeout_ms: int = 6000
    # The broker answers a fetch only after this wait even when data is there (measured on Tansu): keep it low.
    fetch_wait_max_ms: int = 5
    # Faust engine: the fetch wait while the consumer returns full chunks (a backlog), where larger fetches cost
    # less per message than low latency buys; back to fetch_wait_max_ms as soon as a chunk comes back short.
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
    # How often the output topics are checked (exist, same partition count as the request topic).
    topic_check_interval_s: Seconds = 10.0
    # Open Inference Protocol v2 (KServe v2) over HTTP beside the stream (``streamer serve`` serves it alone):
    # 0 (the default) = off for the worker, so that several workers on one host never fight over a port.
    # Loopback unless configured, like the metrics (in a container: STREAMER_OIP_HOST=0.0.0.0).
    oip_port: Port = 0
    oip_host: str = "127.0.0.1"

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
_File = msgspec.defstruct(
    "File",
    [(name, cls, msgspec.field(default_factory=cls)) for name, cls in SECTIONS.items()]
    + [("rollout", dict[str, _RolloutTable], msgspec.field(default_factory=dict))],
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
)


# ---------------------------------------------------------------------------------------------- sources


class Source(NamedTuple):
    """Where a setting's effective value came from."""

    kind: Literal["default", "file", "environment", "dev stack"]
    where: str | None = None  # the file's path, the variable's name, the dev stack's state file

    def __str__(self) -> str:
        return self.kind if self.where is None else f"{self.kind} {self.where}"

    def cause(self) -> str:
        """The end of an error line: ``(from STREAMER_X)``, ``(from streamer.toml)``, ``(default)``."""
        return "(default)" if self.where is None else f"(from {self.where})"


DEFAULT = Source("default")


def setting_name(*parts: str) -> str:
    """The dotted name of a setting; a part that is not a bare TOML key is quoted: ``kafka.client."sasl.password"``."""
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in parts)


def source_of(name: str, sources: Mapping[str, Source]) -> Source:
    """The source of ``name`` or of the nearest setting holding it (``kafka.client."x"`` -> ``kafka.client``)."""
    while name:
        if name in sources:
            return sources[name]
        name = name.rpartition(".")[0]
    return DEFAULT


# ---------------------------------------------------------------------------------------------- secrets

REDACTED = "<redacted>"
# A setting (or kafka.client key) named like this holds a secret: sasl.password, ssl.key.password,
# ssl.keystore.password, sasl.oauthbearer.client.secret, an API token, ssl.key.pem (a private key itself).
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)|secret|token|credential|private|key\.pem|api[._-]?key|jaas|oauthbearer\.config", re.I
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact(name: str, value: Any) -> Any:
    """``value`` of setting ``name`` fit to print: a secret setting's value replaced by ``<redacted>``, the
    credentials of any URL (``scheme://user:pass@host``) too, in dicts and lists as well."""
    if value is None:
        return None
    if is_secret(name):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(setting_name(name, str(k)) if name else str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(name, v) for v in value]
    if isinstance(value, str):
        return _redact_urls(value)
    return value


def _redact_urls(text: str) -> str:
    """A URL's credentials, everything from its ``scheme://`` to the last ``@`` after it, go whole: the password
    may hold ``/``, ``,``, ``:`` or ``@``, and a token may be the user name (``https://TOKEN@host``). Over-redacting
    (a later URL of a list, an ``@`` in a path) is the price of never under-redacting."""
    scheme = _SCHEME.search(text)
    if scheme is None or "@" not in text[scheme.end() :]:
        return text
    return f"{text[: scheme.end()]}{REDACTED}@{text.rpartition('@')[2]}"


# ---------------------------------------------------------------------------------------------- loading


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
        parsed = msgspec.convert(merged, _File, strict=True)
    except msgspec.ValidationError as exc:
        # Environment values were converted (and bounded) one by one above: what fails here is in the file.
        raise _error(exc, merged, _File, in_file) from None
    rollout = {}
    for name, table_ in parsed.rollout.items():
        policy = RolloutPolicy(**msgspec.structs.asdict(table_))
        problem = policy.problem()
        if problem is not None:
            raise ConfigError(f"{setting_name('rollout', name)}: {problem} {in_file.cause()}")
        rollout[name] = policy
    # Unknown STREAMER_* variables are reported (a typo would otherwise be silently ignored) but not fatal:
    # deployment tooling may set variables of its own with the same prefix.
    unknown_env = tuple(sorted(v for v in environ if v.startswith("STREAMER_") and v not in _KNOWN_ENV))
    settings = Settings(
        **{name: getattr(parsed, name) for name in SECTIONS},
        rollout=rollout,
        source=source,
        unknown_env=unknown_env,
    )
    _validate(settings, sources)
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
    base = _bare(hint)
    if text == "" and _optional(hint):
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
        raise _error(exc, raw, hint, source, prefix=name.split(".")) from None


# ---------------------------------------------------------------------------------------------- errors

_AT = re.compile(r"^(?P<problem>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.(\w+)|\[(\.\.\.|\d+)\]")
_BOUND = re.compile(r"^Expected `(?P<type>[^`]+)` (?P<op>>=|<=|>|<) (?P<bound>\S+)$")
_TYPE = re.compile(r"^Expected `(?P<type>[^`]+)`, got `\w+`$")
_BOUND_WORDS = {">=": "at least", ">": "greater than", "<=": "at most", "<": "less than"}


def _error(
    exc: msgspec.ValidationError, root: Any, root_type: Any, source: Source, prefix: list[str] | None = None
) -> ConfigError:
    """msgspec's ``<problem> - at `$.a.b[...]``` about ``root`` (converted to ``root_type``, read from ``source``)
    as ``a.b.KEY: <problem> (from <source>)``, the value shown redacted. msgspec names a dict's entries
    ``[...]``: the entry at fault is found again by converting each one alone."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    problem, path = match["problem"], match["path"] or ""
    parts, value, hint = list(prefix or []), root, root_type
    for field, index in _STEP.findall(path):
        base = _bare(hint)
        if field:
            parts.append(field)
            hint = _field_types(base).get(field, Any)
            value = value.get(field) if isinstance(value, dict) else None
        elif index == "..." and isinstance(value, dict):
            value_type = typing.get_args(base)[1] if typing.get_args(base) else Any
            key = next((k for k in value if _fails({k: value[k]}, base)), next(iter(value), ""))
            parts.append(str(key))
            hint, value = value_type, value.get(key)
        elif index.isdigit() and isinstance(value, list) and int(index) < len(value):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{index}]"]
            hint, value = (typing.get_args(base) or (Any,))[0], value[int(index)]
    name = setting_name(*parts) if parts else ""
    where = source.cause()
    if unknown := re.match(r"^Object contains unknown field `(?P<key>.+)`$", problem):
        key = unknown["key"]
        if not parts:
            return ConfigError(f"unknown section [{key}] {where}: known are {', '.join([*SECTIONS, 'rollout'])}")
        known = list(_field_types(_bare(hint)))
        close = difflib.get_close_matches(key, known, n=1)
        advice = f"did you mean {setting_name(*parts, close[0])}?" if close else f"known are {', '.join(known)}"
        return ConfigError(f"unknown setting {setting_name(*parts, key)} {where}: {advice}")
    shown = _shown(name, value)
    if bound := _BOUND.match(problem):
        text = f"must be {_BOUND_WORDS[bound['op']]} {bound['bound']}, got {shown}"
    elif expected := _TYPE.match(problem):
        wanted = expected["type"].replace("object", "table").replace("null", "none")
        if parts[:1] == ["rollout"] and len(parts) <= 2 and wanted == "table":
            wanted = "one table per model, e.g. [rollout.fraud]"
        elif len(parts) == 1 and wanted == "table":
            wanted = f"a table [{name}]"
        text = f"expected {wanted}, got {shown}"
    elif problem.startswith("Invalid enum value"):
        text = f"{shown} is not one of {', '.join(map(str, typing.get_args(_bare(hint))))}"
    else:
        text = f"{problem[:1].lower()}{problem[1:]}, got {shown}"
    return ConfigError(f"{name or 'config'}: {text} {where}")


def _shown(name: str, value: Any) -> str:
    """A value as an error line shows it: repr, one line, secrets redacted, at most 120 characters."""
    text = repr(redact(name, value))
    return text if len(text) <= 120 else f"{text[:117]}..."


def _bare(hint: Any) -> Any:
    """The type without ``Annotated`` bounds or ``| None``."""
    if typing.get_origin(hint) is Annotated:
        return _bare(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _bare(options[0]) if len(options) == 1 else hint
    return hint


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in typing.get_args(hint)


def _field_types(cls: Any) -> dict[str, Any]:
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return {f.name: f.type for f in msgspec.structs.fields(cls)}
    if dataclasses.is_dataclass(cls):
        return dict(typing.get_type_hints(cls))
    return {}


def _fails(value: Any, hint: Any) -> bool:
    try:
        msgspec.convert(value, hint, strict=True)
    except msgspec.ValidationError:
        return True
    return False


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
