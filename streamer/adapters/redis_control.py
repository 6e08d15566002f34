"""The control channel: one Redis hash that says how every model is served, read by every worker.

Why Redis and not a topic: the state is small and "latest wins" per model, which is what a compacted topic
would give, and the embedded broker has no compaction and keeps topics in memory only (a restart loses them);
Redis is already the shared state of every worker (evaluation, learning), a worker that starts later reads the
current state with one ``HGETALL`` before it serves, and a compare-and-set on the state's generation (one Lua
call) makes two workers that decide at once make one decision.

Key: ``{prefix}:control``, field = model name, value = ``core.rollout.ControlState`` as JSON. Workers poll it
every ``models.control_interval_s`` (one round trip for all models), so a change reaches all of them within
that interval. Every call raises ``StateStoreError`` when Redis fails it (``redis_state.translated``).
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from streamer.adapters.redis_state import translated
from streamer.core.errors import StateStoreError
from streamer.core.rollout import ControlState

# KEYS[1] the hash; ARGV: model, expected generation, new state JSON. 1 if written, 0 if someone else won.
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local generation = 0
if current then generation = cjson.decode(current)['generation'] or 0 end
if generation ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def _state_of(model: str, value: bytes) -> ControlState:
    try:
        return ControlState.from_json(value)
    except (ValueError, TypeError, AttributeError) as exc:  # not JSON, not an object, a field of the wrong type
        raise StateStoreError(f"the control state of {model!r} is not readable: {exc}", retriable=False) from None


class ControlChannel:
    def __init__(self, client: redis.Redis, prefix: str = "streamer") -> None:
        self._redis = client
        self.key = f"{prefix}:control"
        self._cas = client.register_script(_COMPARE_AND_SET)

    def read(self) -> dict[str, ControlState]:
        with translated("control read"):
            stored = self._redis.hgetall(self.key)
        return {name.decode(): _state_of(name.decode(), value) for name, value in stored.items()}

    def state(self, model: str) -> ControlState:
        with translated("control state"):
            value = self._redis.hget(self.key, model)
        return ControlState() if value is None else _state_of(model, value)

    def replace(self, model: str, expected: ControlState, new: ControlState) -> bool:
        """Write ``new`` if the stored state is still at ``expected.generation``."""
        with translated("control write"):
            return bool(self._cas(keys=[self.key], args=[model, expected.generation, new.to_json()]))

    def update(
        self, model: str, change: Callable[[ControlState], ControlState | None], attempts: int = 10
    ) -> tuple[ControlState, ControlState] | None:
        """Apply ``change`` to the current state until the compare-and-set wins: (before, after), or None when
        ``change`` declines (returns None)."""
        for _ in range(attempts):
            before = self.state(model)
            after = change(before)
            if after is None:
                return None
            if self.replace(model, before, after):
                return before, after
        raise StateStoreError(f"control state of {model!r} kept changing under {attempts} attempts", retriable=True)
