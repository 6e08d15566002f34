"""One exception tree for the whole worker; every exception says what to do about it.

Every class carries the same policy attributes (class defaults on ``StreamerError``; a unit test pins them):

- ``reason``: the dead-letter reason (header ``streamer-error``; one of ``REASONS``, the table below) when the
  error turns a request into a dead letter, else None;
- ``retriable``: whether doing the same thing again can succeed (a server that may come back), so the caller
  holds its work and retries instead of giving up;
- ``exit_code``: the process's exit status for an error that stops the worker (``FatalError``; README "Exit
  codes"), else None (the CLI exits 2 for any other ``StreamerError``: an operator error);
- ``topic``, ``partition``, ``offset``: where it happened, when the raiser knows (None otherwise).

The kinds:

- ``DecodeError``: the input itself is bad. Never retried; its ``reason`` is the dead-letter reason and
  ``detail`` the human sentence.
- ``ScoringError``: the runtime failed on a batch (``reason`` ``scoring-failed``: the rows of that batch and
  model become dead letters). Adapters translate the inference library's errors into it.
- ``ModelError``: a model on disk is unusable (corrupt file, card that disagrees with the graph, checksum
  mismatch). The model is refused; other models keep serving.
- ``ConfigError``: a setting is wrong; raised once at start, before anything connects.
- ``StateStoreError``: the shared state store (Redis) failed a call; ``retriable`` when it did not answer
  (connection refused, timeout, loading), not when it refused the call (authentication, a script error).
  Adapters translate the client library's errors into it; services hold their work and retry.
- ``BrokerError``: the Kafka cluster refused or did not answer a request outside the data path (admin,
  metadata); retriable.
- ``TopicRangeError``, ``BatchFileError``: what ``streamer batch`` was asked to read or write cannot be.
- ``DevStackError``: a server of the embedded development stack did not come up.
- ``ImportRefused``: ``streamer models import`` will not publish: the source cannot be read or converted, the
  converted model does not answer like its source, or the new version is worse than the champion.
- ``FatalError`` and its kinds: the worker cannot make progress and must exit, non-zero, for its replacement
  to recover by read-back: ``OutputError`` (3: an output could not be delivered), ``TopicsChanged`` (4: an
  output topic was deleted or resized under the worker), ``Stalled`` (5: a partition held work without
  progress past the bound), ``BrokerUnreachable`` (6: no broker answered at start), ``PersistentKafkaError`` (7: a
  consumer, producer or group error did not clear within ``kafka.error_timeout_s``: ``core.kafka_faults``).
"""

from __future__ import annotations

from dataclasses import dataclass

# Dead-letter reasons: short, stable, machine-readable (contract section 5).
INVALID_JSON = "invalid-json"
SCHEMA = "schema"
UNKNOWN_MODEL = "unknown-model"
TOO_LARGE = "too-large"
NON_FINITE = "non-finite"
SCORING_FAILED = "scoring-failed"
ENRICHMENT_FAILED = "enrichment-failed"


@dataclass(frozen=True, slots=True)
class DeadLetterReason:
    """One dead-letter reason: the ``streamer-error`` header's value, the HTTP status an Open Inference Protocol
    answer carries for it, and when it is given (the row of the reason table in docs/contract.md, verbatim)."""

    name: str
    http_status: int
    when: str


# THE table of dead-letter reasons, in the order of the docs' table. Everything else is derived from it or checked
# against it by a test: ``DEAD_LETTER_REASONS``, the OIP status of a refused request, the enum of
# schemas/dead-letter.schema.json and the reason table of docs/contract.md. The set is closed: a new reason is a
# contract change (CHANGELOG).
REASONS: dict[str, DeadLetterReason] = {
    reason.name: reason
    for reason in (
        DeadLetterReason(
            INVALID_JSON,
            400,
            "the value is not JSON, or not valid UTF-8 anywhere (also inside a string the model never reads), or "
            "nested too deeply to decode",
        ),
        DeadLetterReason(
            SCHEMA,
            400,
            "valid JSON of the wrong shape: not an object, neither or both of `features`/`inputs`, a listed feature "
            "missing, a string for a non-categorical feature (or an unseen category without `allow_missing`), an "
            "OIP tensor whose data does not fit its shape or names nothing the card knows, a tombstone (no value)",
        ),
        DeadLetterReason(
            UNKNOWN_MODEL,
            404,
            "the request names a model, graph or version that is not served, or names none and there is no default",
        ),
        DeadLetterReason(
            TOO_LARGE,
            413,
            "the value is over `worker.max_message_bytes`, an OIP tensor over `worker.max_rows_per_request` rows, "
            "or the prediction would be over the predictions topic's limit",
        ),
        DeadLetterReason(
            NON_FINITE,
            400,
            "a number beyond float64 (`1e999`) or float32 range, or a `null` for a model without `allow_missing`",
        ),
        DeadLetterReason(
            SCORING_FAILED,
            500,
            "the model failed on the batch or returned a non-finite score, or a graph's model was removed by hot "
            "reload",
        ),
        DeadLetterReason(
            ENRICHMENT_FAILED,
            503,
            'a graph\'s enrich stage with `on_failure = "dead-letter"` could not read the entity features (the '
            "feature store was down, slower than the stage's `timeout_ms`, or skipped by its breaker after a "
            "failure); sending the request again later can succeed",
        ),
    )
}
DEAD_LETTER_REASONS = frozenset(REASONS)


_OPERATOR_ERROR = 2  # the exit code of any StreamerError that is not a FatalError: a setting, a refusal, ...


def exit_code_of(error: BaseException) -> int:
    """The process's exit code for an error that ends it: a ``FatalError``'s own, 2 for any other
    ``StreamerError`` (an operator error: the message says what to fix), 1 for anything else (a bug)."""
    if isinstance(error, StreamerError):
        return error.exit_code if error.exit_code is not None else _OPERATOR_ERROR
    return 1


class StreamerError(Exception):
    """Root of every error streamer raises on purpose; the class attributes are the policy defaults."""

    reason: str | None = None
    retriable: bool = False
    exit_code: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None

    def __init__(
        self,
        message: str,
        *,
        retriable: bool | None = None,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable
        if topic is not None:
            self.topic = topic
        if partition is not None:
            self.partition = partition
        if offset is not None:
            self.offset = offset


class ConfigError(StreamerError):
    """A setting is missing, unknown or ill-typed. The message names the setting and where it came from."""


class DecodeError(StreamerError):
    """A message cannot be scored as it is. ``reason`` is one of ``DEAD_LETTER_REASONS``."""

    reason: str

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in DEAD_LETTER_REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DecodeError) and (self.reason, self.detail) == (other.reason, other.detail)

    def __hash__(self) -> int:
        return hash((self.reason, self.detail))


class ModelError(StreamerError):
    """A model version cannot be served. ``path`` names the offending file so the message fits one line."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class ScoringError(StreamerError):
    """Inference failed for a whole batch: its rows of that model are dead-lettered as ``scoring-failed``."""

    reason = SCORING_FAILED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StateStoreError(StreamerError):
    """The shared state store failed a call. Retriable unless the store refused it (auth, a script error)."""

    retriable = True


class BrokerError(StreamerError):
    """The cluster refused or did not answer a request outside the data path (admin, metadata)."""

    retriable = True


class TopicRangeError(StreamerError):
    """The topic, a partition or the range cannot be read, or predictions could not be delivered."""


class BatchFileError(StreamerError):
    """A file cannot be read or written as asked (unknown format, unreadable, not a table)."""


class ImportRefused(StreamerError):
    """A model import stopped before publishing; the message names the cause and, where there is one, the fix."""


class DevStackError(StreamerError):
    """A server of the embedded stack could not be started or reached; the message carries its log tail."""


class FatalError(StreamerError):
    """The worker must stop: it exits with ``exit_code`` and the next owner of its partitions recovers."""

    exit_code: int = 1


class OutputError(FatalError):
    """An output could not be delivered (after the producer's own retries), or the producer failed fatally."""

    exit_code = 3


class TopicsChanged(FatalError):
    """An output topic disappeared or changed its partition count while the worker ran."""

    exit_code = 4


class Stalled(FatalError):
    """A partition held work without progress for longer than the bound (a wedged callback, a lost report)."""

    exit_code = 5


class BrokerUnreachable(FatalError):
    """The broker did not answer within ``kafka.startup_timeout_s`` of the worker's start (each attempt logged)."""

    exit_code = 6


class PersistentKafkaError(FatalError):
    """A Kafka client error did not clear within ``kafka.error_timeout_s`` (``core.kafka_faults``): the group
    speaks another protocol, the broker refuses the client, the request topic is unknown, the worker has no place
    in its group, or partitions behind their end fetch nothing. The message names the cause and the fix."""

    exit_code = 7
