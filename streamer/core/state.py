"""The learning/evaluation state store: its contract (``StateStore``) and an in-memory one (``MemoryStateStore``).

What the services keep in the store, shared by every worker: the prediction log (single-row predictions a label
can join, kept ``prediction_ttl_s``), a once-only marker per applied label, the bucketed evaluation windows of
``core.evaluation``, the FTRL state of every online model (``core.learner``) and the claims that make one worker
report an event. ``adapters.redis_state.RedisStateStore`` is the store of the worker (Lua scripts, atomic per
call); ``MemoryStateStore`` is the same semantics in plain Python, for fast unit tests of the services and as the
executable reference. Both pass one suite, ``tests/contract/state_store_checks.py``.

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

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import msgspec
import numpy as np

from streamer.core import evaluation, learner
from streamer.core.evaluation import STATS_SIZE, WindowSpec
from streamer.core.learner import FtrlParams

_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode

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


def _day(time: float) -> int:
    return math.floor(time / 86400)


@dataclass(slots=True)
class _Logged:
    model: str
    version: str
    score: float
    threshold: float
    time: float
    features: list[float] | None


@dataclass(slots=True)
class _Shared:
    z: np.ndarray
    n: np.ndarray
    updates: int = 0


@dataclass(slots=True)
class _Marker:
    source: str
    expires: float


class MemoryStateStore(StateStore):
    """``StateStore`` in plain Python: the Redis store's semantics, its expiries on the callers' clock.

    Predictions and label markers expire ``prediction_ttl_s`` after the ``time``/``now`` they were written at (Redis
    keeps a day's predictions together and expires a marker on its own clock: the same answers to every call that
    passes a consistent ``now``); an event claim expires ``quiet_s`` after ``clock()`` -- by default a clock that
    never moves, so a claim then holds for the store's lifetime. Each call is atomic under ``lock`` (pass a
    ``threading.Lock()`` when several threads share the store; the default assumes one).
    """

    def __init__(
        self,
        windows: Sequence[WindowSpec] = evaluation.DEFAULT_WINDOWS,
        prediction_ttl_s: int = 7 * 86400,
        prefix: str = "streamer",
        *,
        clock: Callable[[], float] = lambda: 0.0,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.windows = tuple(windows)
        self.prediction_ttl_s = prediction_ttl_s
        self.prefix = prefix
        self.online = {}
        self._clock = clock
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        self._predictions: dict[str, _Logged] = {}  # id (a challenger's with SHADOW appended) -> prediction
        self._markers: dict[str, _Marker] = {}
        self._buckets: dict[tuple[str, str, str, int], np.ndarray] = {}  # (model, version, window, bucket)
        self._shared: dict[str, _Shared] = {}  # "model:version" -> FTRL state
        self._claims: dict[str, float] = {}  # claim -> expiry on ``clock``

    _SHADOW = "\0shadow"

    def log_packed(self, blobs: Sequence[bytes]) -> int:
        logged = 0
        with self._lock:
            for blob in blobs:
                model, version, threshold, time, ids, scores, features, shadow = _unpack(blob)
                suffix = self._SHADOW if shadow else ""
                for i, (id_, score) in enumerate(zip(ids, scores, strict=True)):
                    row = None if features is None else features[i]
                    self._predictions[id_ + suffix] = _Logged(model, version, score, threshold, time, row)
                logged += len(ids)
        return logged

    def _logged(self, key: str, now: float) -> _Logged | None:
        """The prediction under ``key`` if the store still keeps it at ``now`` (the Redis store's days)."""
        p = self._predictions.get(key)
        if p is None:
            return None
        today, oldest = _day(now) + 1, _day(now - self.prediction_ttl_s)  # +1: the workers' clocks differ
        if not oldest <= _day(p.time) <= today or now - p.time > self.prediction_ttl_s:
            return None
        return p

    def apply_labels(self, labels: Sequence[Label], now: float) -> list[int]:
        codes: list[int] = []
        with self._lock:
            specs = dict(self.online)  # one view per call, as the Redis store's
            indices = {key: k for k, key in enumerate(specs)}
            for entry in labels:
                id_, y = entry[0], float(entry[1])
                source = entry[2] if len(entry) > 2 else ""  # type: ignore[misc]
                marker = self._markers.get(id_)
                if marker is not None and marker.expires > now:
                    codes.append(REREAD if source and marker.source == source else DUPLICATE)
                    continue
                p = self._logged(id_, now)
                if p is None:
                    self._markers.pop(id_, None)
                    codes.append(UNKNOWN)
                    continue
                self._markers[id_] = _Marker(source or "1", now + self.prediction_ttl_s)
                self._evaluate(p, y, now)
                shadow = self._predictions.get(id_ + self._SHADOW)
                if shadow is not None and _day(shadow.time) == _day(p.time):  # beside it: the same day's hash
                    self._evaluate(shadow, y, now)
                key = f"{p.model}:{p.version}"
                spec = specs.get(key)
                if spec is not None and p.features is not None and self._learn(key, spec, p, y):
                    codes.append(LEARNED + indices[key])
                else:
                    codes.append(JOINED)
        return codes

    def _evaluate(self, p: _Logged, y: float, now: float) -> None:
        stats = evaluation.stats_of(np.array([p.score]), np.array([y]), p.threshold)
        for window in self.windows:
            key = (p.model, p.version, window.name, window.bucket_of(now))
            self._buckets[key] = self._buckets.get(key, 0) + stats

    def _learn(self, key: str, spec: OnlineSpec, p: _Logged, y: float) -> bool:
        shared = self._shared.get(key)
        d = len(spec.mean)
        if shared is None or shared.z.shape != (d + 1,) or shared.n.shape != (d + 1,):
            return False  # absent, or left by a model of another width: the label joins, nothing is learnt
        state = learner.FtrlState(shared.z, shared.n, spec.mean, spec.scale, spec.params)
        x = np.asarray([p.features], dtype=np.float64)
        learnt = learner.learn_many(state, x, np.array([1.0 if y >= 0.5 else 0.0]))
        self._shared[key] = _Shared(learnt.z, learnt.n, shared.updates + 1)
        return True

    def register_online(self, model: str, version: str, spec: OnlineSpec, z: np.ndarray, n: np.ndarray) -> bool:
        key = f"{model}:{version}"
        with self._lock:
            self.online[key] = spec
            if key in self._shared:
                return False
            self._shared[key] = _Shared(np.asarray(z, dtype=np.float64).copy(), np.asarray(n, dtype=np.float64).copy())
            return True

    def online_weights(self, model: str, version: str) -> OnlineWeights | None:
        with self._lock:
            shared = self._shared.get(f"{model}:{version}")
            return None if shared is None else OnlineWeights(shared.z.copy(), shared.n.copy(), shared.updates)

    def claim_event(self, kind: str, model: str, version: str, quiet_s: int) -> bool:
        key, now = f"{kind}:{model}:{version}", self._clock()
        with self._lock:
            if self._claims.get(key, -math.inf) > now:
                return False
            self._claims[key] = now + quiet_s
            return True

    def window_stats(self, model: str, version: str, window: WindowSpec, now: float) -> np.ndarray:
        total = np.zeros(STATS_SIZE)
        with self._lock:
            for bucket in window.live_buckets(now):
                stats = self._buckets.get((model, version, window.name, bucket))
                if stats is not None:
                    total += stats
        return total
