"""Shared learning/evaluation state in Redis: the prediction log, idempotent label application, and the
bucketed evaluation windows of ``core.evaluation`` -- the same numbers for every worker.

Key scheme (``prefix`` defaults to ``streamer``):
- ``{prefix}:predlog:{day}:{shard}`` hash: field ``id`` -> the logged prediction as one MessagePack array
  ``[model, version, score, threshold, time]`` (plus the raw features for an online model) -- written off the
  hot path with one script call per batch (one round trip), kept ``prediction_ttl_s`` (a label may arrive
  seconds to days later). Predictions logged by versions before 0.2 (a hash per id, ``{prefix}:pred:{id}``)
  are still read;
- ``{prefix}:label:{id}``: set-if-absent marker of a label already applied (same TTL), so that a label read
  twice -- the feedback topic is re-read from the last commit after a crash -- counts once. Its value is the
  source of the label record that applied it (``topic:partition:offset``, ``1`` when the caller gave none): a
  later label with the same id from the same record is a re-read (``REREAD``: the consumer read its own
  uncommitted batch again, after a rebalance or a failed commit), from another record a real duplicate
  (``DUPLICATE``: the label was sent twice);
- ``{prefix}:eval:{model}:{version}:{window}:{bucket}`` hash: the statistics vector of ``core.evaluation``
  (field ``i`` = entry ``i``), incremented atomically, expiring when no window can see it any more;
- ``{prefix}:online:{model}:{version}`` hash: the FTRL state of an online model (fields ``z1..``, ``n1..``,
  the bias last, as ``%.17g`` text so no precision is lost), ``updates`` and ``adaptations`` (a concept-drift
  adaptation rewrote the state: ``adapters.redis_drift``), shared by every worker. A logged prediction of an
  online model also keeps its raw features, which is what a label learns from;
- ``{prefix}:labels:{model}:{version}`` list: the version's label stream, one MessagePack chunk per
  ``apply_labels`` call ``[threshold, scores, labels, features or false per row]``, in application order, read
  and trimmed by the concept-drift decider (``adapters.redis_drift``); capped at 1,024 chunks (about 150 MB at
  worst: 2,000 labels of six features each) for when no decider reads it.

``apply_labels`` is one Lua call per batch: per label it sets the marker (or reports a re-read or a duplicate),
looks the prediction up (or reports it unknown/expired and clears the marker, so that a label arriving before its
prediction can still join when replayed -- a re-read of an unknown label is therefore looked up again) and adds
the label's statistics to the current bucket of every window. When the prediction came from an online model
(registered with ``register_online``), the same call applies one FTRL-Proximal step per label, in label order,
exactly as ``core.learner.learn_many`` does (the Lua transcribes it; tested equal to 1e-9). Atomic per call: two
workers applying labels concurrently never lose or double an update, and learning shares the label's once-only
marker, so a replayed label never learns twice. One script run, not per-feature ``HINCRBYFLOAT`` deltas: measured
faster, and the deltas of two workers computed from the same stale weights are not the sequential FTRL result
(``bench/online.py``). The scripts, and how their maths is held to the core's, are in ``redis_state_scripts``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

from streamer.adapters.redis_state_scripts import APPLY_LABELS, INIT_ONLINE, LOG_PREDICTIONS
from streamer.core import evaluation
from streamer.core.errors import ConfigError, StateStoreError
from streamer.core.evaluation import STATS_SIZE, WindowSpec
from streamer.core.state import DUPLICATE as DUPLICATE
from streamer.core.state import JOINED as JOINED
from streamer.core.state import LEARNED as LEARNED
from streamer.core.state import REREAD as REREAD
from streamer.core.state import UNKNOWN as UNKNOWN
from streamer.core.state import Label, OnlineSpec, OnlineWeights, StateStore
from streamer.core.state import LoggedBatch as LoggedBatch
from streamer.core.state import LoggedPrediction as LoggedPrediction

if TYPE_CHECKING:
    from streamer.config import RedisSettings


# Redis answered but cannot take the call now: a failover (a replica that is read-only), memory full until keys
# expire, a cluster resharding. Like a connection failure, doing the same thing again later can succeed.
_TRANSIENT_REPLIES = (
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError,
)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The client library's errors as ``StateStoreError``, with the policy the services apply
    (``services.runner``): retriable when Redis did not answer (refused, timed out, loading) or cannot take the
    call now (``_TRANSIENT_REPLIES``); not when it refused the call for good -- the credentials, a permission of
    the user's ACL, a script or command error -- and then the message says what to fix."""
    try:
        yield
    except redis.AuthenticationError as exc:  # before ConnectionError, its base class
        raise StateStoreError(
            f"redis {what}: the server refused the credentials ({exc}); set the user and password in redis.url "
            "(STREAMER_REDIS_URL) or redis.password",
            retriable=False,
        ) from exc
    except (redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError) as exc:
        raise StateStoreError(
            f"redis {what}: the Redis user lacks a permission ({exc}); allow the command and the keys under "
            "redis.key_prefix in the user's ACL, or use another user in redis.url",
            retriable=False,
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, *_TRANSIENT_REPLIES) as exc:
        raise StateStoreError(
            f"redis {what}: Redis did not answer ({exc}); check that it runs at redis.url (STREAMER_REDIS_URL; "
            "`streamer dev up` starts one)",
            retriable=True,
        ) from exc
    except redis.RedisError as exc:
        raise StateStoreError(
            f"redis {what}: Redis refused the call ({exc}); see the Redis server's log", retriable=False
        ) from exc


def weight_fields(z: np.ndarray, n: np.ndarray) -> list[object]:
    """The FTRL weights as the field/value pairs of their Redis hash (``z1 v n1 v ...``; exact to the last bit)."""
    fields: list[object] = []
    for k, (zk, nk) in enumerate(zip(z, n, strict=True), start=1):
        fields += [f"z{k}", f"{zk:.17g}", f"n{k}", f"{nk:.17g}"]
    return fields


def online_weights_of(fields: dict[bytes, bytes]) -> OnlineWeights | None:
    """The FTRL state from its Redis hash (``z1..zN``, ``n1..nN``, ``updates``, ``adaptations``; the one reader
    of the layout ``weight_fields`` writes), or None for an empty hash (never registered)."""
    if not fields:
        return None
    values = {k.decode(): v for k, v in fields.items()}
    size = sum(1 for k in values if k.startswith("z"))
    z = np.array([float(values[f"z{k}"]) for k in range(1, size + 1)])
    n = np.array([float(values[f"n{k}"]) for k in range(1, size + 1)])
    return OnlineWeights(z, n, int(values.get("updates", 0)), int(values.get("adaptations", 0)))


class RedisStateStore(StateStore):
    """``core.state.StateStore`` in Redis (module docstring); every call raises ``StateStoreError`` when Redis
    fails it, never the client library's exceptions."""

    def __init__(
        self,
        client: redis.Redis,
        windows: Sequence[WindowSpec] = evaluation.DEFAULT_WINDOWS,
        prediction_ttl_s: int = 7 * 86400,
        prefix: str = "streamer",
    ) -> None:
        self._redis = client
        self.windows = tuple(windows)
        self.prediction_ttl_s = prediction_ttl_s
        self.prefix = prefix
        self._apply = client.register_script(APPLY_LABELS)
        self._log = client.register_script(LOG_PREDICTIONS)
        self._init_online = client.register_script(INIT_ONLINE)
        self.online: dict[str, OnlineSpec] = {}  # "model:version" -> spec

    @property
    def client(self) -> redis.Redis:
        """The connection, for adapters that share it (the control channel)."""
        return self._redis

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> RedisStateStore:
        """``rediss://`` URLs give TLS; user and password in the URL give AUTH."""
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: RedisSettings, **kwargs: object) -> RedisStateStore:
        """The ``[redis]`` section: URL, AUTH password, TLS files, TTL and key prefix."""
        if not settings.url:
            raise ConfigError("no Redis URL: set STREAMER_REDIS_URL or redis.url (or run `streamer dev up`)")
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        if settings.password is not None:
            options["password"] = settings.password
        tls = {
            name: value
            for name, value in (
                ("ssl_ca_certs", settings.ssl_ca_certs),
                ("ssl_certfile", settings.ssl_certfile),
                ("ssl_keyfile", settings.ssl_keyfile),
            )
            if value is not None
        }
        options.update(tls)
        if tls and not settings.url.startswith("rediss://"):
            raise ConfigError("redis.ssl_* settings need a rediss:// URL (TLS)")
        client = redis.Redis.from_url(settings.url, **options)
        kwargs.setdefault("prediction_ttl_s", settings.prediction_ttl_s)
        kwargs.setdefault("prefix", settings.key_prefix)
        return cls(client, **kwargs)  # type: ignore[arg-type]

    def log_packed(self, blobs: Sequence[bytes]) -> int:
        """Log batches already packed (``LoggedBatch.pack``) with one script call; returns the count."""
        if not blobs:
            return 0
        with translated("log_predictions"):
            return int(self._log(args=[self.prefix, self.prediction_ttl_s, *blobs]))

    def apply_labels(self, labels: Sequence[Label], now: float) -> list[int]:
        """Join and apply labels, once each: ``(id, label)`` or ``(id, label, source)``, where ``source`` names the
        label record (``topic:partition:offset``) so that reading the same record again is told
        apart from a label sent twice. Returns per label JOINED, UNKNOWN (or expired), DUPLICATE, REREAD, or
        ``LEARNED + k`` (joined and learnt by the k-th online model, ``learner_of``). Without a source an id seen
        before is always DUPLICATE. Thread-safe against ``register_online`` from another thread (the online
        models are read once per call)."""
        if not labels:
            return []
        online = list(self.online.items())  # one consistent view: register_online may add one meanwhile
        argv: list[object] = [
            self.prefix,
            repr(now),
            self.prediction_ttl_s,
            evaluation.SCORE_BINS,
            evaluation.HISTOGRAMS,
        ]
        argv.append(len(self.windows))
        for window in self.windows:
            argv += [window.name, repr(window.bucket_s), window.buckets]
        argv.append(len(online))
        for key, spec in online:
            p = spec.params
            n_max = repr(p.n_max) if math.isfinite(p.n_max) else "-1"  # -1: no learning-rate floor
            argv += [key, len(spec.mean), repr(p.alpha), repr(p.beta), repr(p.l1), repr(p.l2), n_max]
            argv += [repr(float(v)) for v in spec.mean] + [repr(float(v)) for v in spec.scale]
        for entry in labels:
            argv += [entry[0], repr(float(entry[1])), entry[2] if len(entry) > 2 else ""]
        with translated("apply_labels"):
            return [int(code) for code in self._apply(args=argv)]

    def register_online(self, model: str, version: str, spec: OnlineSpec, z: np.ndarray, n: np.ndarray) -> bool:
        """Learn for ``model@version`` from now on; the shared state starts at ``z``/``n`` unless it exists
        (another worker, or an earlier run, got there first). Returns whether this call created it."""
        self.online[f"{model}:{version}"] = spec
        fields: list[object] = [*weight_fields(z, n), "updates", "0"]
        with translated("register_online"):
            return bool(self._init_online(keys=[f"{self.prefix}:online:{model}:{version}"], args=fields))

    def online_weights(self, model: str, version: str) -> OnlineWeights | None:
        """The shared FTRL state of an online model (one round trip), or None if it was never registered."""
        with translated("online_weights"):
            fields = self._redis.hgetall(f"{self.prefix}:online:{model}:{version}")
        return online_weights_of(fields)

    def claim_event(self, kind: str, model: str, version: str, quiet_s: int) -> bool:
        """True for the first caller in ``quiet_s`` seconds: one event per condition across all workers."""
        with translated("claim_event"):
            return bool(self._redis.set(f"{self.prefix}:event:{kind}:{model}:{version}", "1", nx=True, ex=quiet_s))

    def window_stats(self, model: str, version: str, window: WindowSpec, now: float) -> np.ndarray:
        """The summed statistics vector of ``window`` ending at ``now`` (all workers' updates)."""
        pipe = self._redis.pipeline(transaction=False)
        for bucket in window.live_buckets(now):
            pipe.hgetall(f"{self.prefix}:eval:{model}:{version}:{window.name}:{bucket}")
        total = np.zeros(STATS_SIZE)
        with translated("window_stats"):
            found = pipe.execute()
        for fields in found:
            for field, value in fields.items():
                total[int(field)] += float(value)
        return total
