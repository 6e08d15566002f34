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
(``bench/online.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import redis

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

# The label codes of ``core.state`` (JOINED, UNKNOWN, DUPLICATE, REREAD, LEARNED + k): the Lua below returns
# these numbers literally.

# Where a logged prediction lives: field ``id`` of the hash ``{prefix}:predlog:{day}:{shard}``, the day of its
# logging time and a shard from the id's last four bytes (the same function in both scripts below). One hash
# field per prediction instead of one key with its own expiry: about a third less Redis CPU and memory per
# prediction (measured with a bench against redis-server, 2.4 vs 3.5 µs and 106 vs 157 bytes), and a day's
# hashes expire together, prediction_ttl_s after the day ends. The join checks the logging time against the TTL,
# so expiry stays exact to the second.
_SHARDS = 64
_LUA_SHARD = f"""
local SHADOW = '\\0shadow'
local function shard_of(id)
  local a, b, c, d = string.byte(id, -4, -1)
  return ((a or 0) * 29791 + (b or 0) * 961 + (c or 0) * 31 + (d or 0)) % {_SHARDS}
end
"""

# ARGV: prefix, ttl, then one MessagePack blob per batch: [model, version, threshold, time, ids, scores,
# features or nil]. One argument per batch, not two per prediction: packing arguments is per-argument Python
# work in the client, and the blob is one C-level encode.
_LOG_PREDICTIONS = (
    _LUA_SHARD
    + """
local prefix, ttl, logged = ARGV[1] .. ':predlog:', tonumber(ARGV[2]), 0
local expire_in = {}
for b = 3, #ARGV do
  local batch = cmsgpack.unpack(ARGV[b])
  local model, version, threshold, time = batch[1], batch[2], batch[3], batch[4]
  local ids, scores, features = batch[5], batch[6], batch[7]
  local suffix = batch[8] and SHADOW or ''  -- a challenger's prediction sits beside its champion's
  local day = math.floor(time / 86400)
  local by_shard = {}
  for i = 1, #ids do
    local entry = {model, version, scores[i], threshold, time}
    if features then entry[6] = features[i] end
    local shard = shard_of(ids[i])
    local fields = by_shard[shard]
    if not fields then fields = {}; by_shard[shard] = fields end
    fields[#fields + 1] = ids[i] .. suffix
    fields[#fields + 1] = cmsgpack.pack(entry)
  end
  for shard, fields in pairs(by_shard) do
    local key = prefix .. day .. ':' .. shard
    for s = 1, #fields, 4000 do  -- unpack() has a stack limit: at most 2,000 predictions per HSET
      redis.call('HSET', key, unpack(fields, s, math.min(s + 3999, #fields)))
    end
    expire_in[key] = math.ceil((day + 1) * 86400 + ttl - time)  -- relative: the logging clock is the caller's
  end
  logged = logged + #ids
end
for key, seconds in pairs(expire_in) do redis.call('EXPIRE', key, seconds) end
return logged
"""
)

_INIT_ONLINE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

_APPLY_LABELS = (
    _LUA_SHARD
    + """
local prefix, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local bins, hist = tonumber(ARGV[4]), tonumber(ARGV[5])
local n_windows = tonumber(ARGV[6])
local windows = {}
local i = 7
for w = 1, n_windows do
  windows[w] = {ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}
  i = i + 3
end
local n_online = tonumber(ARGV[i])
i = i + 1
local online = {}  -- "model:version" -> learner parameters and standardisation; state loaded on first use
for o = 1, n_online do
  local spec = {index = o, key = ARGV[i], d = tonumber(ARGV[i + 1]), alpha = tonumber(ARGV[i + 2]),
                beta = tonumber(ARGV[i + 3]), l1 = tonumber(ARGV[i + 4]), l2 = tonumber(ARGV[i + 5]),
                mean = {}, scale = {}}
  i = i + 6
  for k = 1, spec.d do spec.mean[k] = tonumber(ARGV[i + k - 1]); spec.scale[k] = tonumber(ARGV[i + spec.d + k - 1]) end
  i = i + 2 * spec.d
  online[spec.key] = spec
end
-- The shared state, loaded on first use; false (learn nothing, the label still joins) when absent or of another
-- width than the model's (a state left by a different model under the same name@version): a missing field
-- would make every later call fail, and a longer state would be learnt with the wrong bias.
local function state_of(spec)
  if spec.loaded ~= nil then return spec.loaded end
  local fields = {}
  for k = 1, spec.d + 1 do fields[k] = 'z' .. k; fields[spec.d + 1 + k] = 'n' .. k end
  fields[2 * spec.d + 3] = 'z' .. (spec.d + 2)
  local values = redis.call('HMGET', prefix .. ':online:' .. spec.key, unpack(fields))
  spec.loaded = values[2 * spec.d + 3] == false
  for k = 1, 2 * spec.d + 2 do
    if values[k] == false then spec.loaded = false end
  end
  if not spec.loaded then return false end
  spec.z, spec.n, spec.learned = {}, {}, 0
  for k = 1, spec.d + 1 do spec.z[k] = tonumber(values[k]); spec.n[k] = tonumber(values[spec.d + 1 + k]) end
  return true
end
local function learn(spec, features, y)
  local x = {}
  for k = 1, spec.d do x[k] = (features[k] - spec.mean[k]) / spec.scale[k] end
  x[spec.d + 1] = 1
  local w, margin = {}, 0
  for k = 1, spec.d + 1 do
    local z, wk = spec.z[k], 0
    if math.abs(z) > spec.l1 then
      local shrunk = (z > 0 and 1 or -1) * (math.abs(z) - spec.l1)
      wk = -shrunk / ((spec.beta + math.sqrt(spec.n[k])) / spec.alpha + spec.l2)
    end
    w[k] = wk
    margin = margin + wk * x[k]
  end
  margin = math.min(math.max(margin, -35), 35)
  local p = 1 / (1 + math.exp(-margin))
  for k = 1, spec.d + 1 do
    local g, n = (p - y) * x[k], spec.n[k]
    local sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / spec.alpha
    spec.z[k] = spec.z[k] + g - sigma * w[k]
    spec.n[k] = n + g * g
  end
  spec.learned = spec.learned + 1
end
-- A logged prediction of id: in its day's hash (this version), or the hash of its own that versions before
-- 0.2 wrote (fields m, v, s, th, x with x the features as comma-separated text), which may still be in Redis
-- for prediction_ttl_s after an upgrade. {model, version, score, threshold, time[, features]}, or nil when
-- never logged or older than the TTL.
local today, oldest = math.floor(now / 86400) + 1, math.floor((now - ttl) / 86400)  -- +1: workers' clocks differ
local function logged_prediction(id)
  local shard = shard_of(id)
  for day = today, oldest, -1 do
    local key = prefix .. ':predlog:' .. day .. ':' .. shard
    local packed = redis.call('HGET', key, id)
    if packed then
      local p = cmsgpack.unpack(packed)
      if now - p[5] > ttl then return nil end
      return p, key
    end
  end
  local h = redis.call('HMGET', prefix .. ':pred:' .. id, 'm', 'v', 's', 'th', 'x')
  if not h[1] then return nil end
  local x = nil
  if h[5] then
    x = {}
    for v in string.gmatch(h[5], '[^,]+') do table.insert(x, tonumber(v)) end
  end
  return {h[1], h[2], tonumber(h[3]), tonumber(h[4]), now, x}
end
local result = {}
local totals = {}  -- bucket key -> field -> sum: one HINCRBYFLOAT per field and bucket per call, not per label
local streams = {}  -- "model:version" -> this call's rows of its label stream (adapters.redis_drift)
-- Adds one label's statistics for prediction p (model p[1], version p[2], score p[3], threshold p[4]).
local function evaluate(p, y)
  local s, th = p[3], p[4]
  local rows = streams[p[1] .. ':' .. p[2]]
  if not rows then rows = {th, {}, {}, {}}; streams[p[1] .. ':' .. p[2]] = rows end
  table.insert(rows[2], s); table.insert(rows[3], y); table.insert(rows[4], p[6] or false)
  local predicted, positive = s >= th, y >= 0.5
  local c = math.min(math.max(s, 1e-15), 1 - 1e-15)
  local stats = {}
  stats[0] = 1
  stats[1] = (predicted == positive) and 1 or 0
  stats[2] = positive and -math.log(c) or -math.log(1 - c)
  stats[3] = (s - y) * (s - y)
  stats[4] = (predicted and positive) and 1 or 0
  stats[5] = (predicted and not positive) and 1 or 0
  stats[6] = ((not predicted) and positive) and 1 or 0
  local bin = math.floor(math.min(math.max(s, 0), 1) * bins)
  if bin > bins - 1 then bin = bins - 1 end
  if positive then stats[hist + bin] = 1 else stats[hist + bins + bin] = 1 end
  for w = 1, n_windows do
    local name, bucket_s, buckets = windows[w][1], windows[w][2], windows[w][3]
    local key = prefix .. ':eval:' .. p[1] .. ':' .. p[2] .. ':' .. name .. ':' .. math.floor(now / bucket_s)
    local bucket = totals[key]
    if not bucket then
      bucket = {ttl = math.ceil(bucket_s * (buckets + 1)), fields = {}}
      totals[key] = bucket
    end
    for field, value in pairs(stats) do
      if value ~= 0 then bucket.fields[field] = (bucket.fields[field] or 0) + value end
    end
  end
end
while i <= #ARGV do
  local id, y, source = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  i = i + 3
  local marker = prefix .. ':label:' .. id
  if not redis.call('SET', marker, source ~= '' and source or '1', 'NX', 'EX', ttl) then
    if source ~= '' and redis.call('GET', marker) == source then
      table.insert(result, 3)  -- REREAD: this very record was applied before
    else
      table.insert(result, 2)  -- DUPLICATE: another record (or an unknown one) carried this id
    end
  else
    local p, logged_in = logged_prediction(id)
    if not p then
      redis.call('DEL', marker)
      table.insert(result, 1)
    else
      local positive = y >= 0.5
      evaluate(p, y)
      if logged_in then  -- a challenger scored the same request: the same label evaluates it (no learning)
        local shadow = redis.call('HGET', logged_in, id .. SHADOW)
        if shadow then evaluate(cmsgpack.unpack(shadow), y) end
      end
      local spec = online[p[1] .. ':' .. p[2]]
      if spec and p[6] and state_of(spec) then
        learn(spec, p[6], positive and 1 or 0)
        table.insert(result, 3 + spec.index)  -- LEARNED + (index - 1)
      else
        table.insert(result, 0)
      end
    end
  end
end
for key, bucket in pairs(totals) do
  for field, value in pairs(bucket.fields) do redis.call('HINCRBYFLOAT', key, field, value) end
  redis.call('EXPIRE', key, bucket.ttl)
end
for key, rows in pairs(streams) do  -- one chunk per version and call, capped, read by the concept-drift decider
  local stream = prefix .. ':labels:' .. key
  redis.call('RPUSH', stream, cmsgpack.pack(rows))
  redis.call('LTRIM', stream, -1024, -1)
  redis.call('EXPIRE', stream, ttl)
end
for _, spec in pairs(online) do
  if spec.loaded and spec.learned > 0 then
    local key, fields = prefix .. ':online:' .. spec.key, {}
    for k = 1, spec.d + 1 do
      table.insert(fields, 'z' .. k); table.insert(fields, string.format('%.17g', spec.z[k]))
      table.insert(fields, 'n' .. k); table.insert(fields, string.format('%.17g', spec.n[k]))
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('HINCRBY', key, 'updates', spec.learned)
  end
end
return result
"""
)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """The client library's errors as ``StateStoreError``: retriable when Redis did not answer (refused, timed
    out, loading), not when it refused the call (authentication, permissions, a script or command error)."""
    try:
        yield
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError) as exc:
        raise StateStoreError(f"redis {what}: {exc}", retriable=False) from exc
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        raise StateStoreError(f"redis {what}: {exc}", retriable=True) from exc
    except redis.RedisError as exc:
        raise StateStoreError(f"redis {what}: {exc}", retriable=False) from exc


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
        self._apply = client.register_script(_APPLY_LABELS)
        self._log = client.register_script(_LOG_PREDICTIONS)
        self._init_online = client.register_script(_INIT_ONLINE)
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
            argv += [key, len(spec.mean), repr(p.alpha), repr(p.beta), repr(p.l1), repr(p.l2)]
            argv += [repr(float(v)) for v in spec.mean] + [repr(float(v)) for v in spec.scale]
        for entry in labels:
            argv += [entry[0], repr(float(entry[1])), entry[2] if len(entry) > 2 else ""]
        with translated("apply_labels"):
            return [int(code) for code in self._apply(args=argv)]

    def register_online(self, model: str, version: str, spec: OnlineSpec, z: np.ndarray, n: np.ndarray) -> bool:
        """Learn for ``model@version`` from now on; the shared state starts at ``z``/``n`` unless it exists
        (another worker, or an earlier run, got there first). Returns whether this call created it."""
        self.online[f"{model}:{version}"] = spec
        fields: list[str] = []
        for k, (zk, nk) in enumerate(zip(z, n, strict=True), start=1):
            fields += [f"z{k}", f"{zk:.17g}", f"n{k}", f"{nk:.17g}"]
        fields += ["updates", "0"]
        with translated("register_online"):
            return bool(self._init_online(keys=[f"{self.prefix}:online:{model}:{version}"], args=fields))

    def online_weights(self, model: str, version: str) -> OnlineWeights | None:
        """The shared FTRL state of an online model (one round trip), or None if it was never registered."""
        with translated("online_weights"):
            fields = self._redis.hgetall(f"{self.prefix}:online:{model}:{version}")
        if not fields:
            return None
        values = {k.decode(): v for k, v in fields.items()}
        size = sum(1 for k in values if k.startswith("z"))
        z = np.array([float(values[f"z{k}"]) for k in range(1, size + 1)])
        n = np.array([float(values[f"n{k}"]) for k in range(1, size + 1)])
        return OnlineWeights(z, n, int(values.get("updates", 0)), int(values.get("adaptations", 0)))

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
