"""The Lua scripts of ``redis_state.RedisStateStore``: each runs atomically inside Redis, one call per batch.

- ``LOG_PREDICTIONS``: logs packed batches of predictions into the day's sharded hashes;
- ``INIT_ONLINE``: creates an online model's shared FTRL state unless it exists;
- ``APPLY_LABELS``: per label, the once-only marker, the join with its logged prediction (and a challenger's
  beside it), the label's evaluation statistics added to the current bucket of every window, and one
  FTRL-Proximal step for an online model.

The statistics are ``core.evaluation.stats_of`` of one (score, label) pair, in Lua: the vector's layout
(``COUNT``, ``CORRECT``, ... the histograms) and the log-loss clipping are written into the script from the
core's constants, so the layout has one owner; the arithmetic is held equal to the core's (through
``tests/memory_state_store.py``, which applies labels with ``stats_of``) by a property test against a real
redis-server, ``tests/integration/test_redis_evaluation.py``. The FTRL step transcribes
``core.learner.learn_many`` (tested equal to 1e-9, with and without a learning-rate floor,
``tests/integration/test_online_weights.py``); the floor arrives as ``FtrlParams.n_max`` (-1: none), computed
once in Python.
"""

from __future__ import annotations

from streamer.core.evaluation import CORRECT, COUNT, EPS, FN, FP, LOG_LOSS, SQUARED_ERROR, TP
from streamer.core.state import DUPLICATE, JOINED, LEARNED, REREAD, UNKNOWN

# The label codes of ``core.state``, as Lua locals of the label script.
LUA_CODES = f"""
local JOINED, UNKNOWN, DUPLICATE, REREAD, LEARNED = {JOINED}, {UNKNOWN}, {DUPLICATE}, {REREAD}, {LEARNED}
"""

# Where a logged prediction lives: field ``id`` of the hash ``{prefix}:predlog:{day}:{shard}``, the day of its
# logging time and a shard from the id's last four bytes (the same function in both scripts below). One hash
# field per prediction instead of one key with its own expiry: about a third less Redis CPU and memory per
# prediction (measured with a bench against redis-server, 2.4 vs 3.5 µs and 106 vs 157 bytes), and a day's
# hashes expire together, prediction_ttl_s after the day ends. The join checks the logging time against the TTL,
# so expiry stays exact to the second.
SHARDS = 64
LUA_SHARD = f"""
local SHADOW = '\\0shadow'
local function shard_of(id)
  local a, b, c, d = string.byte(id, -4, -1)
  return ((a or 0) * 29791 + (b or 0) * 961 + (c or 0) * 31 + (d or 0)) % {SHARDS}
end
"""

# ARGV: prefix, ttl, then one MessagePack blob per batch: [model, version, threshold, time, ids, scores,
# features or nil]. One argument per batch, not two per prediction: packing arguments is per-argument Python
# work in the client, and the blob is one C-level encode.
LOG_PREDICTIONS = (
    LUA_SHARD
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

INIT_ONLINE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# ``core.evaluation.stats_of`` of one (score s, label y) pair at threshold th, as a table index -> value (a
# sparse vector: the positions of the core's layout). bins, hist: ``SCORE_BINS``, ``HISTOGRAMS`` (from ARGV).
LUA_STATS = f"""
local function stats_of(s, y, th)
  local predicted, positive = s >= th, y >= 0.5
  local c = math.min(math.max(s, {EPS!r}), 1 - {EPS!r})
  local stats = {{}}
  stats[{COUNT}] = 1
  stats[{CORRECT}] = (predicted == positive) and 1 or 0
  stats[{LOG_LOSS}] = positive and -math.log(c) or -math.log(1 - c)
  stats[{SQUARED_ERROR}] = (s - y) * (s - y)
  stats[{TP}] = (predicted and positive) and 1 or 0
  stats[{FP}] = (predicted and not positive) and 1 or 0
  stats[{FN}] = ((not predicted) and positive) and 1 or 0
  local bin = math.floor(math.min(math.max(s, 0), 1) * bins)
  if bin > bins - 1 then bin = bins - 1 end
  if positive then stats[hist + bin] = 1 else stats[hist + bins + bin] = 1 end
  return stats
end
"""

APPLY_LABELS = (
    LUA_SHARD
    + LUA_CODES
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
                n_max = tonumber(ARGV[i + 6]), mean = {}, scale = {}}
  if spec.n_max < 0 then spec.n_max = math.huge end  -- no learning-rate floor
  i = i + 7
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
    local grown = math.min(n + g * g, spec.n_max)  -- the learning-rate floor (FtrlParams.n_max)
    local sigma = (math.sqrt(grown) - math.sqrt(n)) / spec.alpha
    spec.z[k] = spec.z[k] + g - sigma * w[k]
    spec.n[k] = grown
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
"""
    + LUA_STATS
    + """
local result = {}
local totals = {}  -- bucket key -> field -> sum: one HINCRBYFLOAT per field and bucket per call, not per label
local streams = {}  -- "model:version" -> this call's rows of its label stream (adapters.redis_drift)
-- Adds one label's statistics for prediction p (model p[1], version p[2], score p[3], threshold p[4]).
local function evaluate(p, y)
  local rows = streams[p[1] .. ':' .. p[2]]
  if not rows then rows = {p[4], {}, {}, {}}; streams[p[1] .. ':' .. p[2]] = rows end
  table.insert(rows[2], p[3]); table.insert(rows[3], y); table.insert(rows[4], p[6] or false)
  local stats = stats_of(p[3], y, p[4])
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
      table.insert(result, REREAD)  -- this very record was applied before
    else
      table.insert(result, DUPLICATE)  -- another record (or an unknown one) carried this id
    end
  else
    local p, logged_in = logged_prediction(id)
    if not p then
      redis.call('DEL', marker)
      table.insert(result, UNKNOWN)
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
        table.insert(result, LEARNED + spec.index - 1)
      else
        table.insert(result, JOINED)
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
