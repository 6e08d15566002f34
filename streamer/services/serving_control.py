"""Every worker serves what the control channel says: promotions, rollbacks, pins, canaries and shadows
decided anywhere (a command, a rollout on another worker) reach this worker within ``interval_s``.

The effective policy of a model is its control state when one exists (``adapters.control_channel``), else the
configuration's pins, canary and shadow. The first read happens before the worker takes any partition
(``start`` reads synchronously), so a worker that starts later serves the current state from its first batch.
Redis down: the last state keeps serving and the error is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from streamer.adapters.redis_control import ControlChannel
from streamer.core.errors import StateStoreError
from streamer.core.rollout import ControlState
from streamer.core.routing import Serving
from streamer.services.runner import Background, Service
from streamer.serving import ServingModels

log = logging.getLogger(__name__)


def effective_serving(configured: Mapping[str, Serving], states: Mapping[str, ControlState]) -> dict[str, Serving]:
    serving = dict(configured)
    serving.update({name: state.serving() for name, state in states.items()})
    return serving


class ServingControl(Background):
    def __init__(
        self,
        channel: ControlChannel,
        serving: ServingModels,
        configured: Mapping[str, Serving],
        observer: Any,
        interval_s: float = 1.0,
    ) -> None:
        self._channel, self._serving, self._configured = channel, serving, dict(configured)
        self._observer = observer
        self._states: dict[str, ControlState] | None = None
        self.service = Service("serving-control", self._step, interval_s=interval_s)

    def start(self) -> None:
        try:
            self.apply_once()
        except StateStoreError as exc:  # Redis down at start: serve the configuration until it answers
            self._observer.on_redis_error("control_read")
            if not exc.retriable:
                raise  # refused, or an unreadable state: the worker does not start (one line, exit 2)
            log.warning("cannot read the serving state from Redis (%s): serving the configured policy", exc)
        super().start()

    def _step(self) -> bool:
        try:
            self.apply_once()
        except StateStoreError as exc:  # Redis down: the last state keeps serving
            self._observer.on_redis_error("control_read")
            if not exc.retriable:
                raise  # not an outage: the service stops and reports it (runner.py)
        return False

    def apply_once(self) -> bool:
        """Read the shared state; True when it changed what this worker serves."""
        states = self._channel.read()
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
