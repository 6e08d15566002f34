"""Entity features from Redis for the enrichment stage of a scoring graph: per batch, the features of the
entities the rows name (an account, a merchant), one round trip, never an exception.

Key scheme (``prefix`` defaults to ``streamer``, like ``redis_state``): one hash per entity,
``{prefix}:entity:{entity}:{key}``, field = feature name, value = the number as text (``repr(float)``, so no
precision is lost). ``entity`` is the entity type (``account``); ``key`` the raw bytes of the request key or of
a request feature (``feature_key``), binary-safe: it is the last segment, so it may contain anything, the colon
included. ``put`` (and ``streamer features load``) writes them; anything else that writes hashes under that
name works too.

Why one round trip per batch: enrichment sits on the scoring path, and a round trip per row (50-100 µs on
loopback here, more to a remote Redis) would cost more than scoring the row. ``lookup`` sends one
non-transactional pipeline of ``HMGET`` per *distinct* key (a batch often names the same entity many times: each
is read once) and reads the replies in one go; no ``MULTI``, because nothing needs atomicity across entities.
The pipeline is packed here in one ``join`` and written once, not queued command by command on a redis-py
``Pipeline``, whose per-command Python work made it ~1.5x slower for the same bytes on the wire; what is left
is mostly parsing the replies, which redis-py does in C when ``hiredis`` is installed (then ~2.5x faster again).
``bench/enrichment.py`` measures it all: about 5 µs per row for batches of 1,024 rows naming ~640 distinct keys
of 4 features (2 µs with hiredis), 7.5-9 µs (3.4) at 256 rows.

What a row gets: the features of its entity; the feature's default when the row has no key (``None``: no
command is sent for it), when the key is absent (``found`` false), when a field is absent, or when a value is
not a finite number (``float()`` fails, or gives NaN/infinity, which no model should see) -- those last two
count as *field misses* (per row and field, so that they add up with row counts). ``HMGET`` cannot tell an
absent key from a hash none of whose requested fields exist: both are a missing key. A key of another type
(``WRONGTYPE``) is a missing key too, and a warning is logged once.

Failure policy -- why a breaker: ``lookup`` never raises. When Redis is unreachable, times out or answers with
an error, every row gets the defaults and ``Enriched.error`` says why; then for ``retry_after_s`` no lookup even
tries (``error`` says it was skipped), so that a Redis that is down costs nothing per batch instead of a
connection attempt or a ``timeout_s`` wait per batch; the first lookup after that tries again (and reopens the
breaker for another ``retry_after_s`` if it fails). The lookups use a client of their own, built from the
connection settings of the one given (URL, AUTH, TLS), with ``socket_timeout`` and ``socket_connect_timeout`` of
``timeout_s`` (default 50 ms, per socket read, so a large batch that streams in is not cut off; a ``Lookup`` may
ask for another, a graph's ``timeout_ms``, and gets a pool of its own) and no retries:
the given client's timeout (5 s for the shared state's) and any retries would stall scoring for seconds. After a
timeout the connection is dropped, so a late reply is never read as the next batch's. While the breaker is open,
a lookup costs ~5 µs, whatever the batch. The loader (``put``) and ``read`` use the client given, with its own
timeouts, and raise Redis errors: they are operator tools.

Thread safety: the client pools connections, so scoring threads may share a store; the breaker's state and the
counters (``round_trips``, ``failures``, ``skipped``: for tests and benches, not exact under contention) are
plain attributes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from streamer.config import RedisSettings

log = logging.getLogger(__name__)

# Rows per pipeline when loading: big enough to amortise the round trip, small enough that one reply does not
# hold Redis (or the client's memory) for long.
_PUT_CHUNK = 1000

# Connection keyword arguments that belong to the pool they were made for, not to its settings.
_POOL_OWNED = ("maint_notifications_pool_handler", "himport_registry")


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the graph asks for one batch: the features ``features`` of entity type ``entity`` for each row's
    key (``None``: the row has no key, it gets the defaults without a Redis call)."""

    entity: str
    keys: Sequence[bytes | None]
    features: tuple[str, ...]
    defaults: tuple[float, ...]
    timeout_s: float | None = None  # how long the lookup may wait for Redis (None: the store's ``timeout_s``)

    def __post_init__(self) -> None:
        # Checked here, where the graph builds the request, so that ``lookup`` itself has nothing to refuse.
        _check_entity(self.entity)
        if len(self.defaults) != len(self.features):
            raise ValueError(f"{len(self.features)} features but {len(self.defaults)} defaults")
        if len(set(self.features)) != len(self.features):
            raise ValueError(f"features named twice in {self.features}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")


@dataclass(frozen=True, slots=True)
class Enriched:
    """One batch's answer, in row order."""

    values: np.ndarray  # float64 [rows, len(features)]; the defaults where missing
    found: np.ndarray  # bool [rows]: the row's key exists (its features were read)
    field_misses: int  # (row, feature) pairs of found rows that took the default: absent or not a number
    error: str | None  # Redis unreachable, timed out or skipped by the breaker: every row got the defaults


def _check_entity(entity: str) -> None:
    if not entity or ":" in entity:
        raise ValueError(f"entity type {entity!r} must be a non-empty name without ':'")


def feature_key(value: float | int | str | bytes | None) -> bytes | None:
    """The key bytes of a request feature used as an entity key, written the way the loader writes a JSON key:
    an integral number as an integer (``123.0`` and ``123`` -> ``b"123"``), text as UTF-8; ``None``, NaN (a
    missing feature) and infinities -> no key. ``core.graph.execution`` writes numeric key columns the same way."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return str(int(value)).encode()
    number = float(value)
    if not math.isfinite(number):
        return None
    if number.is_integer():  # through float64 like the request's features: past 2**53 both round alike
        return str(int(number)).encode()
    return repr(number).encode()


def _short_timeout_client(client: redis.Redis, timeout_s: float) -> redis.Redis:
    """A client of its own with the connection settings of ``client`` (host, AUTH, TLS, db), ``timeout_s``
    for connecting and per read, no retries and raw bytes: what the scoring path can afford."""
    pool = client.connection_pool
    kwargs: dict[str, Any] = {
        name: value
        for name, value in pool.connection_kwargs.items()
        if name not in _POOL_OWNED and not name.startswith("orig_")
    }
    kwargs.update(
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        decode_responses=False,
    )
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class EntityFeatureStore:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "streamer",
        timeout_s: float = 0.05,
        retry_after_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``client`` serves ``put`` and ``read``; lookups get their own client from its settings (see the
        module docstring). ``clock`` is for tests of the breaker."""
        self._client = client
        self._fast = _short_timeout_client(client, timeout_s)
        self._fast_by_timeout = {timeout_s: self._fast}  # a pool per timeout a graph's stages ask for
        self._pools_lock = threading.Lock()
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._closed_at = -math.inf  # the breaker lets lookups through from this time on
        self._last_error = ""
        self._warned_wrongtype = False
        self.round_trips = 0  # lookups that went to Redis
        self.failures = 0  # of which failed
        self.skipped = 0  # lookups the open breaker answered with defaults without trying

    @classmethod
    def from_settings(cls, settings: RedisSettings, **kwargs: Any) -> EntityFeatureStore:
        """The ``[redis]`` section, with the same URL, AUTH and TLS handling (and errors) as the shared state;
        the key prefix is ``redis.key_prefix`` unless ``prefix`` is given."""
        from streamer.adapters.redis_state import RedisStateStore

        state = RedisStateStore.from_settings(settings)
        kwargs.setdefault("prefix", state.prefix)
        return cls(state.client, **kwargs)

    def key_of(self, entity: str, key: bytes) -> bytes:
        """The Redis key of one entity."""
        _check_entity(entity)
        return b"%s:entity:%s:%s" % (self.prefix.encode(), entity.encode(), key)

    def close(self) -> None:
        """Close the lookup connections (the given client is the caller's)."""
        for fast in list(self._fast_by_timeout.values()):
            fast.close()

    def _fast_client(self, timeout_s: float | None) -> redis.Redis:
        """The lookup client with this timeout: the store's own, or one made on first use (a graph's stages ask
        for a handful of timeouts at most, so a pool each costs nothing)."""
        if timeout_s is None or timeout_s == self.timeout_s:
            return self._fast
        fast = self._fast_by_timeout.get(timeout_s)
        if fast is None:
            with self._pools_lock:  # scoring threads share the store: make each pool once
                fast = self._fast_by_timeout.get(timeout_s)
                if fast is None:
                    fast = self._fast_by_timeout[timeout_s] = _short_timeout_client(self._client, timeout_s)
        return fast

    # ------------------------------------------------------------------------------------------- lookup

    def lookup(self, request: Lookup) -> Enriched:
        """The features of every row's entity: one pipelined round trip for the distinct keys (none when no row
        has a key or the breaker is open). Never raises on a Redis problem: defaults and ``error``."""
        rows, width = len(request.keys), len(request.features)
        defaults = np.asarray(request.defaults, dtype=np.float64)
        now = self._clock()
        if now < self._closed_at:  # first: while Redis is down a batch costs no more than this
            self.skipped += 1
            remaining = self._closed_at - now
            return self._defaults(rows, defaults, f"not tried for another {remaining:.2f} s: {self._last_error}")
        # Slot 0 is "no key"; each distinct key gets the next slot, so a key named by many rows is read once.
        slots: dict[bytes, int] = {}
        slot_of_row = np.fromiter(
            (0 if key is None else slots.setdefault(key, len(slots) + 1) for key in request.keys),
            dtype=np.intp,
            count=rows,
        )
        if not slots:
            return self._defaults(rows, defaults, None)
        self.round_trips += 1
        try:
            replies = self._read(self._fast_client(request.timeout_s), request.entity, list(slots), request.features)
        except (redis.RedisError, OSError) as exc:
            return self._fail(rows, defaults, exc)
        # One flat list of floats, the defaults' row first, then one row per distinct key: numpy gets it in one
        # conversion, instead of a scalar assignment per value.
        flat = list(request.defaults)
        found_slot = [False]
        misses_slot = [0]
        for reply in replies:
            if type(reply) is not list:  # an error reply (ResponseError) for this key only
                if not str(reply).startswith("WRONGTYPE"):  # NOAUTH, LOADING...: Redis cannot answer at all
                    return self._fail(rows, defaults, reply)
                self._warn_wrongtype(request.entity, reply)
                reply = [None] * width
            if reply.count(None) == width:  # absent key (or none of the fields): a row miss, not field misses
                flat.extend(request.defaults)
                found_slot.append(False)
                misses_slot.append(0)
                continue
            misses = 0
            for value, default in zip(reply, request.defaults, strict=True):
                if value is None:
                    flat.append(default)
                    misses += 1
                    continue
                try:
                    number = float(value)
                except ValueError:
                    number = math.nan
                if math.isfinite(number):
                    flat.append(number)
                else:
                    flat.append(default)
                    misses += 1
            found_slot.append(True)
            misses_slot.append(misses)
        table = np.array(flat, dtype=np.float64).reshape(len(slots) + 1, width)
        return Enriched(
            values=table[slot_of_row],
            found=np.array(found_slot, dtype=bool)[slot_of_row],
            field_misses=int(np.array(misses_slot, dtype=np.int64)[slot_of_row].sum()),
            error=None,
        )

    def _read(self, fast: redis.Redis, entity: str, keys: list[bytes], features: tuple[str, ...]) -> list[Any]:
        """One ``HMGET`` per key, pipelined: one write, then the replies in order. Packed here in one ``join``
        rather than queued on a redis-py ``Pipeline``, whose per-command Python work (packing and bookkeeping)
        was 85 % of a 1,024-row batch (``bench/enrichment.py``); the wire traffic is the same. An error reply
        stays in the list (a ``WRONGTYPE`` key must not hide the others); anything else disconnects the
        connection, so that a late reply to this batch is never read as the next one's."""
        name = self.key_of(entity, b"")
        fields = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in (field.encode() for field in features))
        head = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(features))
        blob = b"".join([b"%s$%d\r\n%s%s\r\n%s" % (head, len(name) + len(k), name, k, fields) for k in keys])
        pool = fast.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([blob])
            replies: list[Any] = []
            for _ in keys:
                try:
                    replies.append(connection.read_response(disable_decoding=True))
                except redis.ResponseError as reply:  # read whole: the connection is still in step
                    replies.append(reply)
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)
        return replies

    def _fail(self, rows: int, defaults: np.ndarray, exc: BaseException) -> Enriched:
        self.failures += 1
        self._last_error = f"Redis unavailable ({type(exc).__name__}: {exc})"
        self._closed_at = self._clock() + self.retry_after_s
        return self._defaults(rows, defaults, self._last_error)

    @staticmethod
    def _defaults(rows: int, defaults: np.ndarray, error: str | None) -> Enriched:
        return Enriched(
            values=np.tile(defaults, (rows, 1)),
            found=np.zeros(rows, dtype=bool),
            field_misses=0,
            error=error,
        )

    def _warn_wrongtype(self, entity: str, reply: redis.ResponseError) -> None:
        if not self._warned_wrongtype:
            self._warned_wrongtype = True
            where = f"{self.prefix}:entity:{entity}:"
            log.warning("a key under %s is not a hash; it is treated as missing (%s)", where, reply)

    # ------------------------------------------------------------------------------------------- loading

    def put(self, entity: str, rows: Iterable[tuple[bytes, Mapping[str, float]]], ttl_s: int | None = None) -> int:
        """Write entities (merged into their hashes: fields not given are kept), ``ttl_s`` seconds to live if
        given, in pipelines of ``_PUT_CHUNK`` rows; returns how many were written. Raises ``ValueError`` for a
        row without features or with a value that is not a finite number (the rows before it are written), and
        Redis errors: this is the loader, not the scoring path."""
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, not {ttl_s}")
        written = 0
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        for key, features in rows:
            if not features:
                raise ValueError(f"entity {key!r} has no features")
            mapping: dict[str, str] = {}
            for name, value in features.items():
                number = float(value)
                if not math.isfinite(number):
                    raise ValueError(f"entity {key!r}: feature {name!r} is {value!r}, not a finite number")
                mapping[name] = repr(number)
            redis_key = self.key_of(entity, key)
            pipe.hset(redis_key, mapping=mapping)
            if ttl_s is not None:
                pipe.expire(redis_key, ttl_s)
            pending += 1
            if pending == _PUT_CHUNK:
                pipe.execute()
                written += pending
                pending = 0
        if pending:
            pipe.execute()
            written += pending
        return written

    def read(self, entity: str, key: bytes) -> dict[str, bytes]:
        """One entity's hash as stored (empty when absent), for ``streamer features get``."""
        stored = self._client.hgetall(self.key_of(entity, key))
        return {
            (name.decode(errors="backslashreplace") if isinstance(name, bytes) else name): (
                value if isinstance(value, bytes) else str(value).encode()
            )
            for name, value in stored.items()
        }
