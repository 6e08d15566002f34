"""The learning/evaluation state store: its contract (``StateStore``) and the values that cross it.

What the services keep in the store, shared by every worker: the prediction log (single-row predictions a label
can join, kept ``prediction_ttl_s``), a once-only marker per applied label, the bucketed evaluation windows of
``core.evaluation``, the FTRL state of every online model (``core.learner``) and the claims that make one worker
report an event. ``adapters.redis_state.RedisStateStore`` is the store of the worker (Lua scripts, atomic per
call); ``tests/memory_state_store.py`` holds the same semantics in plain Python, for fast unit tests of the
services and as the executable reference. Both pass one suite, ``tests/contract/state_store_checks.py``.

The contract, per call:

- ``log_packed(blobs)`` logs batches packed by ``LoggedBatch.pack`` and returns how many predictions it logged;
  a challenger's batch (``shadow``) sits beside its champion's and never answers a label by itself;
- ``apply_labels(labels, now)`` returns one code per label, in order: ``JOINED`` (its prediction's statistics
  were added to the current bucket of every window), ``UNKNOWN`` (no prediction with that id, or one logged more
  than ``prediction_ttl_s`` before ``now``: nothing kept, so the label can join when replayed), ``DUPLICATE`` (an
  id applied before, from another label record or from no named one), ``REREAD`` (the same label record --
  ``(id, label, source)`` -- applied before), or ``LEARNED + k`` (joined, and learnt by the k-th registered online
  model, ``learner_of``). Atomic per call: concurrent callers never lose or double an update;
- ``register_online(model, version, spec, z, n)`` learns for that version from the next call on; the shared state
  starts at ``z``/``n`` unless it exists (returns whether this call created it). A label learns when its logged
  prediction carried features and the state has the model's width; one FTRL-Proximal step per label, in order,
  exactly ``core.learner.learn_many``;
- ``online_weights`` reads that state (None when never registered); ``claim_event`` is True for the first caller
  in ``quiet_s`` seconds; ``window_stats`` sums a window's buckets ending ``now`` (``core.evaluation``).

Errors: a store that cannot do a call raises ``StateStoreError`` (``retriable`` when it may answer later).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np

from streamer.core import evaluation
from streamer.core.evaluation import WindowSpec
from streamer.core.learner import FtrlParams

_pack = msgspec.msgpack.Encoder().encode

# Per label: joined (evaluated), unknown or expired, duplicate (the same id from another label record: sent
# twice), reread (the same label record applied before: the consumer read it again), or joined and learnt by an
# online model -- ``LEARNED + k`` for the k-th registered online model (``learner_of``).
JOINED, UNKNOWN, DUPLICATE, REREAD, LEARNED = 0, 1, 2, 3, 4

Label = tuple[str, float] | tuple[str, float, str]


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    """One prediction to log (tests, benches); the worker logs whole batches (``LoggedBatch``)."""

    id: str
    model: str
    version: str
    score: float
    threshold: float
    time: float
    features: list[float] | None = None  # raw features, kept for online models only


@dataclass(frozen=True, slots=True)
class LoggedBatch:
    """The single-row predictions of one model version in one released batch, as columns."""

    model: str
    version: str
    threshold: float
    time: float
    ids: list[str]
    scores: list[float]
    features: np.ndarray | None = None  # [rows, n_features] for an online model
    shadow: bool = False  # a challenger's predictions: joined to the same labels, beside the champion's

    def __len__(self) -> int:
        return len(self.ids)

    def pack(self) -> bytes:
        """The batch as one MessagePack array (what the Redis logging script takes; a C-level encode)."""
        features = None if self.features is None else self.features.astype(np.float64).tolist()
        return _pack(
            (self.model, self.version, self.threshold, self.time, self.ids, self.scores, features, self.shadow)
        )


@dataclass(frozen=True, slots=True)
class OnlineSpec:
    """What a learning step needs of an online model: learner parameters and the standardisation."""

    params: FtrlParams
    mean: np.ndarray
    scale: np.ndarray


@dataclass(frozen=True, slots=True)
class OnlineWeights:
    z: np.ndarray
    n: np.ndarray
    updates: int
    adaptations: int = 0  # concept-drift adaptations that rewrote the state (``core.label_monitor``)

    @property
    def generation(self) -> tuple[int, int]:
        """Changes whenever the weights may have: a label learnt or an adaptation applied."""
        return self.updates, self.adaptations


class StateStore(Protocol):
    """The store the services use (module docstring). Implementations subclass it for the shared methods."""

    windows: tuple[WindowSpec, ...]
    prediction_ttl_s: int
    prefix: str
    online: dict[str, OnlineSpec]  # "model:version" -> spec, in registration order (the ``LEARNED + k`` codes)

    def log_packed(self, blobs: Sequence[bytes]) -> int: ...

    def apply_labels(self, labels: Sequence[Label], now: float) -> list[int]: ...

    def register_online(self, model: str, version: str, spec: OnlineSpec, z: np.ndarray, n: np.ndarray) -> bool: ...

    def online_weights(self, model: str, version: str) -> OnlineWeights | None: ...

    def claim_event(self, kind: str, model: str, version: str, quiet_s: int) -> bool: ...

    def window_stats(self, model: str, version: str, window: WindowSpec, now: float) -> np.ndarray: ...

    def log_batches(self, batches: Sequence[LoggedBatch]) -> int:
        """Log columnar batches of predictions with one call; returns the count."""
        return self.log_packed([b.pack() for b in batches if len(b)])

    def log_predictions(self, predictions: Iterable[LoggedPrediction]) -> int:
        """Log single predictions (tests, benches: one batch per prediction); returns how many were logged."""
        return self.log_batches(
            [
                LoggedBatch(
                    p.model,
                    p.version,
                    p.threshold,
                    p.time,
                    [p.id],
                    [p.score],
                    None if p.features is None else np.asarray([p.features]),
                )
                for p in predictions
            ]
        )

    def learner_of(self, code: int) -> tuple[str, str]:
        """(model, version) of the online model a ``LEARNED + k`` code names."""
        model, _, version = list(self.online)[code - LEARNED].rpartition(":")
        return model, version

    def metrics(self, model: str, version: str, window: WindowSpec, now: float) -> evaluation.Metrics:
        return evaluation.metrics_of(self.window_stats(model, version, window, now))
