"""Every serving mode serves what the control channel says: promotions, rollbacks, pins, canaries and shadows
decided anywhere (a command, a rollout on another worker) reach a worker or ``streamer serve`` within
``interval_s``, and ``streamer batch`` reads them once before its first row.

The effective policy of a model is its control state when one exists (``adapters.redis_control``), else the
configuration's pins, canary and shadow (``core.rollout.effective_serving``). The first read happens before
anything is scored (``read_at_start``, which ``start`` calls synchronously), so a worker that starts later
serves the current state from its first batch. Redis down: the configured policy (at start) or the last state
read keeps serving, said once at start and counted after. A refusal is not an outage (wrong credentials, a
missing ACL permission, an unreadable state: ``retriable`` False): at start it stops the mode with one line
(exit 2); later the service stops and reports it (``services.runner``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from streamer.adapters.redis_control import ControlChannel
from streamer.core.errors import StateStoreError
from streamer.core.rollout import ControlState, effective_serving
from streamer.core.routing import Serving
from streamer.services.runner import Background, Service
from streamer.serving import ServingModels

log = logging.getLogger(__name__)


class RedisErrors(Protocol):
    def on_redis_error(self, operation: str) -> None: ...


class ServingControl(Background):
    def __init__(
        self,
        channel: ControlChannel,
        serving: ServingModels,
        configured: Mapping[str, Serving],
        observer: RedisErrors | None,
        interval_s: float = 1.0,
    ) -> None:
        self.channel, self._serving, self._configured = channel, serving, dict(configured)
        self._observer = observer
        self._states: dict[str, ControlState] | None = None
        self.service = Service("serving-control", self._step, interval_s=interval_s)

    def read_at_start(self) -> None:
        """Apply the shared state once, now; Redis down: serve the configuration until it answers (said once)."""
        try:
            self.apply_once()
        except StateStoreError as exc:  # Redis down at start: serve the configuration until it answers
            self._count_error()
            if not exc.retriable:
                raise  # refused, or an unreadable state: the mode does not start (one line, exit 2)
            log.warning("cannot read the serving state from Redis (%s): serving the configured policy", exc)

    def start(self) -> None:
        self.read_at_start()
        super().start()

    def _step(self) -> bool:
        try:
            self.apply_once()
        except StateStoreError as exc:  # Redis down: the last state keeps serving
            self._count_error()
            if not exc.retriable:
                raise  # not an outage: the service stops and reports it (runner.py)
        return False

    def _count_error(self) -> None:
        if self._observer is not None:
            self._observer.on_redis_error("control_read")

    def apply_once(self) -> bool:
        """Read the shared state; True when it changed what is served."""
        states = self.channel.read()
        if states == self._states:
            return False
        self._states = states
        models = self._serving.set_serving(effective_serving(self._configured, states))
        for name, state in states.items():
            if name in models.catalog.cards:
                log.info(
                    "serving %s: champion %s%s%s (generation %s: %s)",
                    name,
                    models.catalog.serving_version(name),
                    f", canary {dict(state.canary)}" if state.canary else "",
                    f", shadow {state.shadow}" if state.shadow is not None else "",
                    state.generation,
                    state.reason or "-",
                )
        return True
