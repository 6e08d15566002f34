"""Settings: a TOML file overridden by ``STREAMER_*`` environment variables, validated once, passed as values.

Why it looks like this: every setting is a field of a frozen ``msgspec.Struct`` section, declared once with
its type, its default and (``Meta``) its bounds; msgspec does the converting and checking that used to be
hand-written, and this module only translates msgspec's errors (``... - at `$.worker.batch_max_size```) into
one line naming the setting and where its value came from. Adapters receive the typed sections and never read
the environment themselves. ``streamer config show`` (streamer/cli/config.py) prints the effective settings
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

from streamer.config.loading import load, load_with_sources
from streamer.config.redaction import REDACTED, is_secret, redact
from streamer.config.schema import (
    DEFAULT_CONFIG_FILE,
    DEV_STATE_FILE,
    ENGINES,
    ENVIRONMENT,
    FIELD_TYPES,
    SECTIONS,
    DevSettings,
    EvaluationSettings,
    KafkaSettings,
    ModelSettings,
    OnlineSettings,
    RedisSettings,
    Settings,
    TopicSettings,
    WorkerSettings,
)
from streamer.config.sources import DEFAULT, Source, setting_name, source_of

__all__ = [
    "DEFAULT",
    "DEFAULT_CONFIG_FILE",
    "DEV_STATE_FILE",
    "ENGINES",
    "ENVIRONMENT",
    "FIELD_TYPES",
    "REDACTED",
    "SECTIONS",
    "DevSettings",
    "EvaluationSettings",
    "KafkaSettings",
    "ModelSettings",
    "OnlineSettings",
    "RedisSettings",
    "Settings",
    "Source",
    "TopicSettings",
    "WorkerSettings",
    "is_secret",
    "load",
    "load_with_sources",
    "redact",
    "setting_name",
    "source_of",
]
