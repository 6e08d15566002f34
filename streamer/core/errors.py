"""One exception tree for the whole worker; every exception says what to do about it.

- ``DecodeError``: the input itself is bad. Never retried; its ``reason`` is the dead-letter reason
  (contract section 5, header ``streamer-error``) and ``detail`` the human sentence.
- ``ModelError``: a model on disk is unusable (corrupt file, card that disagrees with the graph, checksum
  mismatch). The model is refused; other models keep serving.
- ``ScoringError``: the runtime failed on a batch; ``retriable`` says whether trying again can help.
- ``ConfigError``: a setting is wrong; raised once at start, before anything connects.
- ``FatalError`` and its kinds: the worker cannot make progress and must exit, non-zero, for its replacement
  to recover by read-back. ``exit_code`` is the process's exit status (documented in the README):
  ``OutputError`` (3: an output could not be delivered), ``TopicsChanged`` (4: an output topic was deleted or
  resized under the worker), ``Stalled`` (5: a partition held work without progress past the bound).
"""

from __future__ import annotations

# Dead-letter reasons: short, stable, machine-readable (contract section 5). Tests pin this set.
INVALID_JSON = "invalid-json"
SCHEMA = "schema"
UNKNOWN_MODEL = "unknown-model"
TOO_LARGE = "too-large"
NON_FINITE = "non-finite"
SCORING_FAILED = "scoring-failed"

DEAD_LETTER_REASONS = frozenset({INVALID_JSON, SCHEMA, UNKNOWN_MODEL, TOO_LARGE, NON_FINITE, SCORING_FAILED})


class StreamerError(Exception):
    """Root of every error streamer raises on purpose."""


class ConfigError(StreamerError):
    """A setting is missing, unknown or ill-typed. The message names the setting and where it came from."""


class DecodeError(StreamerError):
    """A message cannot be scored as it is. ``reason`` is one of ``DEAD_LETTER_REASONS``."""

    retriable = False

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
    """Inference failed for a whole batch. Not retriable means: dead-letter the rows as ``scoring-failed``."""

    def __init__(self, detail: str, *, retriable: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retriable = retriable


class FatalError(StreamerError):
    """The worker must stop: it exits with ``exit_code`` and the next owner of its partitions recovers."""

    exit_code = 1


class OutputError(FatalError):
    """An output could not be delivered (after the producer's own retries), or the producer failed fatally."""

    exit_code = 3


class TopicsChanged(FatalError):
    """An output topic disappeared or changed its partition count while the worker ran."""

    exit_code = 4


class BrokerUnreachable(FatalError):
    """The broker did not answer within ``kafka.startup_timeout_s`` of the worker's start (each attempt logged)."""

    exit_code = 6


class Stalled(FatalError):
    """A partition held work without progress for longer than the bound (a wedged callback, a lost report)."""

    exit_code = 5
