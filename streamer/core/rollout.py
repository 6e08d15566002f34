"""Model rollouts as values: the shared serving state of a model, its transitions, and the label-driven verdict.

``ControlState`` is what every worker must agree on for one model name: the champion (``pin``), an optional
candidate served to a share of keys (``canary``) or scored beside the champion (``shadow``), the versions
already rolled back (never tried again automatically), and a ``generation`` that grows by one per change, so
that a writer can compare-and-set (two workers deciding at once make one decision).

Transitions (``promote``, ``rollback``, ``start_candidate``, ``pinned``) are pure functions of a state, and
``verdict`` decides a rollout from two sets of rolling metrics over the same window:

- nothing until both champion and candidate have ``min_labels`` joined labels in the window;
- ``promote`` when the candidate beats the champion by ``promote_margin`` (accuracy higher, or log loss lower);
- ``rollback`` when it is worse by ``rollback_margin``;
- otherwise keep collecting labels.

Invariants (property-tested): a transition always increases the generation by exactly one; after
``promote(v)`` the champion is ``v`` and no candidate is left; after ``rollback`` no candidate is left and the
rolled-back version is remembered; a state survives its JSON round trip.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from streamer.core.evaluation import Metrics
from streamer.core.routing import Serving

METRICS = ("accuracy", "log_loss")
STAGES = ("canary", "shadow")


@dataclass(frozen=True, slots=True)
class RolloutPolicy:
    """``[rollout.NAME]``: how a new version of NAME is tried and judged (off unless ``enabled``)."""

    enabled: bool = False
    stage: str = "shadow"  # how a new version is tried: "shadow" (champion/challenger) or "canary"
    canary_weight: float = 0.1
    metric: str = "accuracy"
    window: str = "5m"
    min_labels: int = 500
    promote_margin: float = 0.01
    rollback_margin: float = 0.01

    def problem(self) -> str | None:
        if self.stage not in STAGES:
            return f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}"
        if self.metric not in METRICS:
            return f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}"
        if not 0 < self.canary_weight < 1:
            return f"canary_weight must be in (0, 1), got {self.canary_weight}"
        if self.min_labels < 1 or self.promote_margin < 0 or self.rollback_margin < 0:
            return "min_labels must be at least 1 and the margins not negative"
        return None


@dataclass(frozen=True, slots=True)
class ControlState:
    pin: int | None = None
    canary: tuple[tuple[int, float], ...] = ()
    shadow: int | None = None
    previous: int | None = None  # the champion before the last promotion (what a manual rollback returns to)
    rolled_back: tuple[int, ...] = ()
    generation: int = 0
    reason: str = ""

    @property
    def candidate(self) -> int | None:
        """The version on trial: the shadow, else the (only) canary version that is not the champion."""
        if self.shadow is not None:
            return self.shadow
        trial = [v for v, _ in self.canary if v != self.pin]
        return trial[0] if len(trial) == 1 else None

    def serving(self) -> Serving:
        return Serving(self.pin, self.canary, self.shadow)

    def to_json(self) -> str:
        return json.dumps(
            {
                "pin": self.pin,
                "canary": {str(v): w for v, w in self.canary},
                "shadow": self.shadow,
                "previous": self.previous,
                "rolled_back": list(self.rolled_back),
                "generation": self.generation,
                "reason": self.reason,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ControlState:
        data: dict[str, Any] = json.loads(text)
        return cls(
            pin=_int_or_none(data.get("pin")),
            canary=tuple(sorted((int(v), float(w)) for v, w in (data.get("canary") or {}).items())),
            shadow=_int_or_none(data.get("shadow")),
            previous=_int_or_none(data.get("previous")),
            rolled_back=tuple(int(v) for v in data.get("rolled_back") or ()),
            generation=int(data.get("generation", 0)),
            reason=str(data.get("reason", "")),
        )


def effective_serving(configured: Mapping[str, Serving], states: Mapping[str, ControlState]) -> dict[str, Serving]:
    """How each model is served: its control state where one exists (a command or a rollout wrote it), else the
    configuration's pins, canary and shadow. Workers, ``serve``, ``batch`` and ``models list`` all apply this."""
    serving = dict(configured)
    serving.update({name: state.serving() for name, state in states.items()})
    return serving


def change_fields(after: ControlState, champion_before: int) -> dict[str, Any]:
    """What every ``model-events`` record of a change of the shared state says about it, whoever made it (a
    command or a rollout): ``champion`` is the champion *after* the change, ``champion_before`` the one serving
    before it (the pin, else the highest version), with the new state's ``generation`` and ``reason``."""
    return {
        "generation": after.generation,
        "champion_before": champion_before,
        "champion": after.pin,
        "reason": after.reason,
    }


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _next(state: ControlState, reason: str, **changes: Any) -> ControlState:
    return replace(state, generation=state.generation + 1, reason=reason, **changes)


def pinned(state: ControlState, version: int, reason: str) -> ControlState:
    """Serve ``version`` to every key (a pin); any trial ends."""
    return _next(state, reason, pin=version, canary=(), shadow=None)


def promote(state: ControlState, version: int, champion: int, reason: str) -> ControlState:
    """``version`` becomes the champion; the old ``champion`` is remembered for a manual rollback."""
    return _next(
        state,
        reason,
        pin=version,
        canary=(),
        shadow=None,
        previous=champion if champion != version else state.previous,
        rolled_back=tuple(v for v in state.rolled_back if v != version),
    )


def rollback(state: ControlState, champion: int, reason: str) -> ControlState:
    """End the trial (the candidate is remembered as rolled back); with no trial, return to the previous
    champion. The champion stays pinned, so a higher version on disk does not take over by itself."""
    candidate = state.candidate
    if candidate is not None:
        return _next(
            state,
            reason,
            pin=champion,
            canary=(),
            shadow=None,
            rolled_back=tuple(sorted({*state.rolled_back, candidate})),
        )
    back = state.previous if state.previous is not None else champion
    return _next(
        state,
        reason,
        pin=back,
        canary=(),
        shadow=None,
        previous=None,
        rolled_back=tuple(sorted({*state.rolled_back, champion})) if back != champion else state.rolled_back,
    )


def trial(state: ControlState, champion: int, version: int, stage: str, weight: float, reason: str) -> ControlState:
    """``version`` on trial beside ``champion``: scored as its shadow, or serving ``weight`` of the keys."""
    if stage == "shadow":
        return _next(state, reason, pin=champion, canary=(), shadow=version)
    return _next(state, reason, pin=champion, canary=((version, weight),), shadow=None)


def start_candidate(state: ControlState, champion: int, version: int, policy: RolloutPolicy) -> ControlState:
    reason = f"new version {version} on trial as a {policy.stage} of {champion}"
    return trial(state, champion, version, policy.stage, policy.canary_weight, reason)


def next_candidate(state: ControlState, champion: int, versions: list[int]) -> int | None:
    """The newest loaded version above the champion that has not been rolled back, if no trial is running."""
    if state.candidate is not None:
        return None
    newer = [v for v in versions if v > champion and v not in state.rolled_back]
    return max(newer) if newer else None


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # "promote" or "rollback"
    figures: dict[str, float] = field(default_factory=dict)


def verdict(champion: Metrics, candidate: Metrics, policy: RolloutPolicy) -> Verdict | None:
    """Promote, roll back, or None (not enough labels, or within the margins)."""
    if champion.count < policy.min_labels or candidate.count < policy.min_labels:
        return None
    if policy.metric == "accuracy":
        gain = candidate.accuracy - champion.accuracy
        figures = {"champion_accuracy": champion.accuracy, "candidate_accuracy": candidate.accuracy}
    else:
        gain = champion.log_loss - candidate.log_loss  # lower is better
        figures = {"champion_log_loss": champion.log_loss, "candidate_log_loss": candidate.log_loss}
    figures.update(champion_labels=float(champion.count), candidate_labels=float(candidate.count), gain=float(gain))
    if gain >= policy.promote_margin and gain > 0:
        return Verdict("promote", figures)
    if -gain >= policy.rollback_margin and gain < 0:
        return Verdict("rollback", figures)
    return None
