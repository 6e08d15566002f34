"""Rollouts decided by delayed labels: a new version is tried (shadow or canary), judged on the labels this
project already joins, and promoted or rolled back -- by whichever worker looks first, once.

Every ``interval_s``, for each model with ``[rollout.NAME] enabled = true``:
1. no shared state yet: pin the champion this worker serves (so that a version dropped in later does not take
   over as "the highest" before it is judged);
2. no trial running and a loaded version newer than the champion, never rolled back: start its trial as the
   policy's stage (``rollout-started`` event);
3. a trial running: read the champion's and the candidate's rolling metrics over the policy's window (the same
   labels for a shadow, the candidate's share of keys for a canary) and apply ``core.rollout.verdict``:
   ``model-promoted`` or ``model-rolled-back``, with the figures behind the decision.

Every event names ``champion`` (the champion after the change) and ``champion_before`` (the one this worker
saw serving when it decided), as the control commands' events do; the ``champion_*`` figures of a verdict are
those of ``champion_before``, the version the candidate was judged against.

Each change is a compare-and-set on the control state's generation: when two workers decide at once, one
writes and the other sees the new state at its next look. The change reaches every worker through the control
channel (``services.serving_control``); this worker applies it at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamer.adapters.redis_control import ControlChannel
from streamer.core import rollout
from streamer.core.errors import StateStoreError
from streamer.core.rollout import ControlState, RolloutPolicy
from streamer.core.state import StateStore
from streamer.services.runner import Background, Service
from streamer.serving import ServingModels

log = logging.getLogger(__name__)


class Rollouts(Background):
    def __init__(
        self,
        channel: ControlChannel,
        store: StateStore,
        serving: ServingModels,
        policies: Mapping[str, RolloutPolicy],
        emit: Callable[..., Any],
        apply: Callable[[], Any],
        observer: Any,
        interval_s: float = 10.0,
    ) -> None:
        self._channel, self._store, self._serving = channel, store, serving
        self._policies = {name: p for name, p in policies.items() if p.enabled}
        self._emit, self._apply, self._observer = emit, apply, observer
        self._windows = {w.name: w for w in store.windows}
        self.service = Service("rollout", self._step, interval_s=interval_s)

    def start(self) -> None:
        self._step()
        super().start()

    def _step(self) -> bool:
        for name, policy in self._policies.items():
            try:
                self.check(name, policy)
            except StateStoreError as exc:  # Redis down: decide later
                self._observer.on_redis_error("rollout")
                if not exc.retriable:
                    raise  # not an outage: the service stops and reports it (runner.py)
                log.debug("rollout check of %s failed: %s", name, exc)
        return False

    def check(self, name: str, policy: RolloutPolicy, now: float | None = None) -> str | None:
        """One look at ``name``'s rollout; the change made (an event type), or None."""
        catalog = self._serving.current.catalog
        versions = sorted(catalog.cards.get(name, {}))
        if not versions:
            return None
        state = self._channel.state(name)
        champion = state.pin if state.pin in versions else catalog.serving_version(name)
        assert champion is not None
        if state.generation == 0:
            first = rollout.pinned(state, champion, f"rollout on: {champion} is the champion")
            return self._write(name, state, first, "rollout-champion", str(champion), champion, {})
        candidate = state.candidate
        if candidate is None or candidate not in versions:
            newer = rollout.next_candidate(state, champion, versions)
            if newer is None:
                return None
            trial = rollout.start_candidate(state, champion, newer, policy)
            fields = {"stage": policy.stage, "weight": policy.canary_weight}
            return self._write(name, state, trial, "rollout-started", str(newer), champion, fields)
        window = self._windows[policy.window]
        now = time.time() if now is None else now
        champion_metrics = self._store.metrics(name, str(champion), window, now)
        candidate_metrics = self._store.metrics(name, str(candidate), window, now)
        decision = rollout.verdict(champion_metrics, candidate_metrics, policy)
        if decision is None:
            return None
        figures = {"metric": policy.metric, "window": policy.window, **decision.figures}
        if decision.action == "promote":
            reason = f"{candidate} beat {champion} on {policy.metric} by {decision.figures['gain']:.4f}"
            return self._write(
                name,
                state,
                rollout.promote(state, candidate, champion, reason),
                "model-promoted",
                str(candidate),
                champion,
                figures,
            )
        reason = f"{candidate} was worse than {champion} on {policy.metric} by {-decision.figures['gain']:.4f}"
        return self._write(
            name,
            state,
            rollout.rollback(state, champion, reason),
            "model-rolled-back",
            str(candidate),
            champion,
            figures,
        )

    def _write(
        self,
        name: str,
        before: ControlState,
        after: ControlState,
        kind: str,
        version: str,
        champion_before: int,
        fields: dict[str, Any],
    ) -> str | None:
        if not self._channel.replace(name, before, after):
            return None  # another worker decided first; its state arrives with the next read
        log.warning("rollout of %s: %s (%s)", name, kind, after.reason)
        self._emit(kind, name, version, **rollout.change_fields(after, champion_before), **fields)
        self._apply()
        return kind
