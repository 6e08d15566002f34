"""Shared learning/evaluation state in Redis: the prediction log, idempotent label application, and the
bucketed evaluation windows of ``core.evaluation`` -- the same numbers for every worker.

Key scheme (``prefix`` defaults to ``streamer``):
- ``{prefix}:pred:{id}`` hash: model, version, score, threshold, time -- written in pipelined batches off the
  hot path, expiring after ``prediction_ttl_s`` (a label may arrive seconds to days later);
- ``{prefix}:label:{id}``: set-if-absent marker of a label already applied (same TTL), so that a label read
  twice -- the feedback topic is re-read from the last commit after a crash -- counts once;
- ``{prefix}:eval:{model}:{version}:{window}:{bucket}`` hash: the statistics vector of ``core.evaluation``
  (field ``i`` = entry ``i``), incremented atomically, expiring when no window can see it any more.

``apply_labels`` is one Lua call per batch: per label it sets the marker (or reports a duplicate), looks the
prediction up (or reports it unknown/expired and clears the marker, so that a label arriving before its
prediction can still join when replayed) and adds the label's statistics to the current bucket of every
window. Atomic per call: two workers applying labels concurrently never lose or double an update.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from streamer.core import evaluation
from streamer.core.evaluation import STATS_SIZE, WindowSpec

JOINED, UNKNOWN, DUPLICATE = 0, 1, 2

_APPLY_LABELS = """
local prefix, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local bins, hist = tonumber(ARGV[4]), tonumber(ARGV[5])
local n_windows = tonumber(ARGV[6])
local windows = {}
local i = 7
for w = 1, n_windows do
  windows[w] = {ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])}
  i = i + 3
end
local result = {}
local totals = {}  -- bucket key -> field -> sum: one HINCRBYFLOAT per field and bucket per call, not per label
while i <= #ARGV do
  local id, y = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local marker = prefix .. ':label:' .. id
  if not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
    table.insert(result, 2)
  else
    local p = redis.call('HMGET', prefix .. ':pred:' .. id, 'm', 'v', 's', 'th')
    if not p[1] then
      redis.call('DEL', marker)
      table.insert(result, 1)
    else
      local s, th = tonumber(p[3]), tonumber(p[4])
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
      table.insert(result, 0)
    end
  end
end
for key, bucket in pairs(totals) do
  for field, value in pairs(bucket.fields) do redis.call('HINCRBYFLOAT', key, field, value) end
  redis.call('EXPIRE', key, bucket.ttl)
end
return result
"""


@dataclass(frozen=True, slots=True)
class LoggedPrediction:
    id: str
    model: str
    version: str
    score: float
    threshold: float
    time: float


class RedisStateStore:
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

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> RedisStateStore:
        """``rediss://`` URLs give TLS; user and password in the URL give AUTH."""
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), **kwargs)  # type: ignore[arg-type]

    def log_predictions(self, predictions: Iterable[LoggedPrediction]) -> int:
        """One pipelined round trip for the whole batch; returns how many were logged."""
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for p in predictions:
            key = f"{self.prefix}:pred:{p.id}"
            pipe.hset(
                key,
                mapping={"m": p.model, "v": p.version, "s": repr(p.score), "th": repr(p.threshold), "t": repr(p.time)},
            )
            pipe.expire(key, self.prediction_ttl_s)
            count += 1
        if count:
            pipe.execute()
        return count

    def apply_labels(self, labels: Sequence[tuple[str, float]], now: float) -> list[int]:
        """Join and apply labels, once each; returns per label JOINED, UNKNOWN (or expired) or DUPLICATE."""
        if not labels:
            return []
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
        for label_id, label in labels:
            argv += [label_id, repr(float(label))]
        return [int(code) for code in self._apply(args=argv)]

    def window_stats(self, model: str, version: str, window: WindowSpec, now: float) -> np.ndarray:
        """The summed statistics vector of ``window`` ending at ``now`` (all workers' updates)."""
        pipe = self._redis.pipeline(transaction=False)
        for bucket in window.live_buckets(now):
            pipe.hgetall(f"{self.prefix}:eval:{model}:{version}:{window.name}:{bucket}")
        total = np.zeros(STATS_SIZE)
        for fields in pipe.execute():
            for field, value in fields.items():
                total[int(field)] += float(value)
        return total

    def metrics(self, model: str, version: str, window: WindowSpec, now: float) -> evaluation.Metrics:
        return evaluation.metrics_of(self.window_stats(model, version, window, now))
