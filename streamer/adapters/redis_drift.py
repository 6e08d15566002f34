"""The shared state of concept-drift detection in Redis: each version's label stream and its monitor.

Keys (``prefix`` as the state store's):
- ``{prefix}:labels:{model}:{version}`` list: the label stream, appended by ``RedisStateStore.apply_labels`` in
  the same script run that joins and learns the labels (one MessagePack chunk per call: ``[threshold, scores,
  labels, features or false per row]``), so its order is the order in which the shared weights learnt them;
- ``{prefix}:monitor:{model}:{version}`` string: the encoded ``core.label_monitor.MonitorState`` (prequential
  sums, detector, detections), no expiry: it is the version's history.

``read`` takes the monitor, the pending chunks and (for an online model) the shared FTRL state in one round trip;
``advance`` writes the monitor fed with those chunks, drops them from the list and, when an adaptation was
decided, writes the adapted FTRL state and counts it -- one script run, and only if the monitor is still at the
position read and no chunk arrived since. So two workers deciding at once make one decision (the other's call
returns False and it reads again), and an adapted state never overwrites a label learnt after the read.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import redis

from streamer.adapters.redis_state import translated
from streamer.core.label_monitor import MonitorState
from streamer.core.state import OnlineWeights

# KEYS: monitor, stream, online. ARGV: expected position, chunks read, new monitor, then (optional) the adapted
# state as field/value pairs. 1 when written, 0 when another decider (or a new chunk) came first.
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
local position = 0
if current then position = cmsgpack.unpack(current)[1] end
if position ~= tonumber(ARGV[1]) then return 0 end
local read = tonumber(ARGV[2])
if #ARGV > 3 and redis.call('LLEN', KEYS[2]) ~= read then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
if read > 0 then redis.call('LTRIM', KEYS[2], read, -1) end
if #ARGV > 3 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 4, #ARGV))
  redis.call('HINCRBY', KEYS[3], 'adaptations', 1)
end
return 1
"""

_decode_chunk = msgspec.msgpack.Decoder().decode


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """The rows one ``apply_labels`` call added to a version's label stream."""

    threshold: float
    scores: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None  # [rows, d] when every row carried its features (an online model), else None


@dataclass(frozen=True, slots=True)
class Pending:
    monitor: bytes | None
    position: int
    chunks: list[StreamChunk]
    online: OnlineWeights | None


def _chunk(blob: bytes) -> StreamChunk:
    threshold, scores, labels, features = _decode_chunk(blob)
    rows = None
    if features and all(f for f in features):
        rows = np.asarray(features, dtype=np.float64)
    return StreamChunk(float(threshold), np.asarray(scores, dtype=np.float64), np.asarray(labels, np.float64), rows)


def _online(fields: dict[bytes, bytes]) -> OnlineWeights | None:
    if not fields:
        return None
    values = {k.decode(): v for k, v in fields.items()}
    size = sum(1 for k in values if k.startswith("z"))
    z = np.array([float(values[f"z{k}"]) for k in range(1, size + 1)])
    n = np.array([float(values[f"n{k}"]) for k in range(1, size + 1)])
    return OnlineWeights(z, n, int(values.get("updates", 0)), int(values.get("adaptations", 0)))


class RedisDriftStore:
    """Every call raises ``StateStoreError`` when Redis fails it (``redis_state.translated``)."""

    def __init__(self, client: redis.Redis, prefix: str = "streamer", max_chunks: int = 512) -> None:
        self._redis = client
        self.prefix = prefix
        self.max_chunks = max_chunks
        self._advance = client.register_script(_ADVANCE)

    def _keys(self, model: str, version: str) -> tuple[str, str, str]:
        suffix = f"{model}:{version}"
        return f"{self.prefix}:monitor:{suffix}", f"{self.prefix}:labels:{suffix}", f"{self.prefix}:online:{suffix}"

    def read(self, model: str, version: str) -> Pending:
        """The monitor, up to ``max_chunks`` pending chunks (oldest first) and the shared FTRL state, at once."""
        monitor, stream, online = self._keys(model, version)
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(monitor)
        pipe.lrange(stream, 0, self.max_chunks - 1)
        pipe.hgetall(online)
        with translated("concept_drift read"):
            saved, blobs, fields = pipe.execute()
        position = 0 if saved is None else int(msgspec.msgpack.decode(saved, type=MonitorState).position)
        return Pending(saved, position, [_chunk(b) for b in blobs], _online(fields))

    def advance(
        self, model: str, version: str, pending: Pending, monitor: bytes, adapted: OnlineWeights | None = None
    ) -> bool:
        """Save ``monitor`` (fed with ``pending.chunks``) and drop those chunks; with ``adapted``, also replace the
        shared FTRL state (only if no label arrived since ``read``). False when another decider came first."""
        keys = list(self._keys(model, version))
        argv: list[object] = [pending.position, len(pending.chunks), monitor]
        if adapted is not None:
            for k, (zk, nk) in enumerate(zip(adapted.z, adapted.n, strict=True), start=1):
                argv += [f"z{k}", f"{zk:.17g}", f"n{k}", f"{nk:.17g}"]
        with translated("concept_drift advance"):
            return bool(self._advance(keys=keys, args=argv))

    def monitor(self, model: str, version: str) -> bytes | None:
        with translated("concept_drift monitor"):
            return self._redis.get(self._keys(model, version)[0])
