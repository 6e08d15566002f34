"""The shared state of concept-drift detection in Redis: each version's label stream and its monitor.

Keys (``prefix`` as the state store's):
- ``{prefix}:labels:{model}:{version}`` list: the label stream, appended by ``RedisStateStore.apply_labels`` in
  the same script run that joins and learns the labels (one MessagePack chunk per call: ``[threshold, scores,
  labels, features or false per row]``), so its order is the order in which the shared weights learnt them;
- ``{prefix}:monitor:{model}:{version}`` string: the encoded ``core.label_monitor.MonitorState`` (prequential
  sums, detector, detections), no expiry: it is the version's history;
- ``{prefix}:calibration:{model}:{version}`` hash: the FTRL state of a frozen version's calibration stage
  (``core.calibration``), fields as the online state's (``z1..``, ``n1..``, ``updates``, ``adaptations``),
  learnt by the decider from the label stream.

``read`` takes the monitor, the pending chunks and the shared learner state (online or calibration) in one
round trip; ``advance`` writes the monitor fed with those chunks, drops them from the list and writes the
learner state the decider derived (an online model's adapted one, a calibration stage's learnt one), counting
an adaptation -- one script run, and only if the monitor is still at the position read (and, for an online
state, which labels update in Redis, no chunk arrived since). So two workers deciding at once make one decision
(the other's call returns False and it reads again), and an adapted state never overwrites a label learnt after
the read.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import redis

from streamer.adapters.redis_state import online_weights_of, translated, weight_fields
from streamer.core.label_monitor import MonitorState
from streamer.core.state import OnlineWeights

# KEYS: monitor, stream, learner state. ARGV: expected position, chunks read, new monitor, whether no chunk may
# have arrived since the read (the state was derived from the shared one that labels update), whether this write
# is an adaptation (counted), then (optional) the learner state as field/value pairs. 1 when written, 0 when
# another decider (or a new chunk) came first.
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
local position = 0
if current then position = cmsgpack.unpack(current)[1] end
if position ~= tonumber(ARGV[1]) then return 0 end
local read = tonumber(ARGV[2])
if ARGV[4] == '1' and redis.call('LLEN', KEYS[2]) ~= read then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
if read > 0 then redis.call('LTRIM', KEYS[2], read, -1) end
if #ARGV > 5 then redis.call('HSET', KEYS[3], unpack(ARGV, 6, #ARGV)) end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[3], 'adaptations', 1) end
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


class RedisDriftStore:
    """Every call raises ``StateStoreError`` when Redis fails it (``redis_state.translated``)."""

    def __init__(self, client: redis.Redis, prefix: str = "streamer", max_chunks: int = 512) -> None:
        self._redis = client
        self.prefix = prefix
        self.max_chunks = max_chunks
        self._advance = client.register_script(_ADVANCE)

    def _keys(self, model: str, version: str, learner: str) -> tuple[str, str, str]:
        suffix = f"{model}:{version}"
        return (
            f"{self.prefix}:monitor:{suffix}",
            f"{self.prefix}:labels:{suffix}",
            f"{self.prefix}:{learner}:{suffix}",
        )

    def read(self, model: str, version: str, learner: str = "online") -> Pending:
        """The monitor, up to ``max_chunks`` pending chunks (oldest first) and the learner's shared state
        (``learner``: ``online``, the FTRL state of an ``[online]`` model, or ``calibration``), at once."""
        monitor, stream, state = self._keys(model, version, learner)
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(monitor)
        pipe.lrange(stream, 0, self.max_chunks - 1)
        pipe.hgetall(state)
        with translated("concept_drift read"):
            saved, blobs, fields = pipe.execute()
        position = 0 if saved is None else int(msgspec.msgpack.decode(saved, type=MonitorState).position)
        return Pending(saved, position, [_chunk(b) for b in blobs], online_weights_of(fields))

    def advance(
        self,
        model: str,
        version: str,
        pending: Pending,
        monitor: bytes,
        state: OnlineWeights | None = None,
        *,
        learner: str = "online",
        adapted: bool = False,
    ) -> bool:
        """Save ``monitor`` (fed with ``pending.chunks``) and drop those chunks; with ``state``, also replace the
        learner's shared state: an ``online`` one only if no label arrived since ``read`` (labels learn it in
        Redis), a ``calibration`` one (learnt here only) always; ``adapted`` counts an adaptation. False when
        another decider came first: nothing was written."""
        keys = list(self._keys(model, version, learner))
        exclusive = state is not None and learner == "online"
        argv: list[object] = [pending.position, len(pending.chunks), monitor, int(exclusive), int(adapted)]
        if state is not None:
            argv += weight_fields(state.z, state.n)
            if learner != "online":
                argv += ["updates", state.updates]
        with translated("concept_drift advance"):
            return bool(self._advance(keys=keys, args=argv))
