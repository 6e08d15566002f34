"""``streamer models promote | rollback | pin | canary | shadow | serving | compare``: the model lifecycle by
hand, through the same control channel the label-driven rollouts use (``adapters.control_channel``).

A change is a compare-and-set on the shared state in Redis: every worker serves it within
``models.control_interval_s``, and a worker started later reads it before its first batch. Each change is also
a ``model-events`` record (``by = "command"``) when Kafka is reachable, like the decisions of a rollout.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from streamer.core import names, rollout
from streamer.core.errors import ConfigError, StateStoreError
from streamer.core.rollout import ControlState
from streamer.core.routing import Serving, champion

log = logging.getLogger(__name__)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def versions_on_disk(s: Any, name: str) -> list[int]:
    """The versions of ``name`` in the model repository, ascending."""
    from streamer.adapters import model_repository

    return sorted(int(p.name) for p in model_repository.version_dirs(s.require_models_dir()) if p.parent.name == name)


def model_names(s: Any) -> list[str]:
    """The model names of the repository on disk."""
    from streamer.adapters import model_repository

    return sorted({p.parent.name for p in model_repository.version_dirs(s.require_models_dir())})


def pinned_of(s: Any, name: str, versions: list[int], state: ControlState) -> int | None:
    """NAME's pinned champion on disk with ``state`` stored (generation 0: none stored; then ``[models] pins``)."""
    from streamer.wiring.models import configured_serving

    stored = {name: state} if state.generation else {}
    pin = rollout.effective_serving(configured_serving(s), stored).get(name, Serving()).pin
    return pin if pin in versions else None


def champion_of(s: Any, name: str, versions: list[int], state: ControlState) -> int:
    """NAME's champion as every serving mode sees it with ``state`` stored (the one rule: ``routing.champion``)."""
    chosen = champion(versions, pinned_of(s, name, versions, state))
    assert chosen is not None  # versions is never empty here
    return chosen


def channel_of(s: Any) -> Any:
    from streamer.adapters.redis_control import ControlChannel
    from streamer.adapters.redis_state import RedisStateStore

    s.require_redis_url()
    store = RedisStateStore.from_settings(s.redis)
    return ControlChannel(store.client, store.prefix)


def serving_champion(s: Any, name: str) -> int | None:
    """The version serving ``name`` now (None when it has none on disk): the control channel's state when Redis
    is configured (a warning and the config file's pins when Redis does not answer), else the config's pins."""
    versions = versions_on_disk(s, name)
    if not versions:
        return None
    state = ControlState()
    if s.redis.url:
        try:
            state = channel_of(s).state(name)
        except StateStoreError as exc:
            log.warning("cannot read the serving state from Redis (%s): using the config file's pins", exc)
    return champion_of(s, name, versions, state)


def context(s: Any, name: str) -> tuple[Any, list[int], int]:
    """The control channel, the versions of ``name`` on disk and its champion now."""
    versions = versions_on_disk(s, name)
    if not versions:
        raise names.unknown("model", name, model_names(s), str(s.models.dir))
    channel = channel_of(s)
    return channel, versions, champion_of(s, name, versions, channel.state(name))


def change(
    s: Any,
    out: Any,
    name: str,
    kind: str,
    version: int | None,
    build: Callable[[ControlState, int], ControlState],
    trial: bool = False,
) -> ControlState:
    """Apply ``build(state, champion)`` to ``name``'s control state (compare-and-set), write the ``kind`` event
    and print the new state. ``version`` must be on disk; ``trial``: it goes on trial beside a pinned champion
    (refused without a pin: ``_trial_problem``)."""
    channel, versions, _ = context(s, name)
    if version is not None and version not in versions:
        raise ConfigError(f"{name} has no version {version} in {s.models.dir} (versions: {versions})")

    def apply(state: ControlState) -> ControlState:
        if trial:
            assert version is not None
            problem = _trial_problem(name, kind, version, pinned_of(s, name, versions, state), versions)
            if problem is not None:
                raise ConfigError(problem)
        return build(state, champion_of(s, name, versions, state))

    result = channel.update(name, apply)
    assert result is not None
    before, after = result
    champion_before = champion_of(s, name, versions, before)
    _emit(s, kind, name, str(version if version is not None else after.pin), after, champion_before)
    out.print(
        Text(
            f"{name}: {kind} (generation {after.generation}): champion {after.pin}"
            + (f", canary {dict(after.canary)}" if after.canary else "")
            + (f", shadow {after.shadow}" if after.shadow is not None else "")
        )
    )
    return after


def register(models_app: typer.Typer, settings: Callable[[], Any], out: Any) -> None:
    """Add the lifecycle commands to ``streamer models``."""

    @models_app.command("promote")
    def models_promote(name: str, version: int) -> None:
        """Make VERSION the champion of NAME on every worker (ends any trial)."""
        change(
            settings(),
            out,
            name,
            "model-promoted",
            version,
            lambda state, champion: rollout.promote(state, version, champion, f"promoted {version} by command"),
        )

    @models_app.command("rollback")
    def models_rollback(name: str) -> None:
        """End NAME's trial (canary or shadow), or return to the champion before the last promotion."""
        change(
            settings(),
            out,
            name,
            "model-rolled-back",
            None,
            lambda state, champion: rollout.rollback(state, champion, "by command"),
        )

    @models_app.command("pin")
    def models_pin(name: str, version: int) -> None:
        """Serve VERSION of NAME to every key on every worker (ends any trial)."""
        change(
            settings(),
            out,
            name,
            "model-pinned",
            version,
            lambda state, _: rollout.pinned(state, version, f"pinned {version}"),
        )

    @models_app.command("canary")
    def models_canary(
        name: str,
        version: int,
        weight: Annotated[float, typer.Option(help="Share of keys VERSION serves (sticky per key).")] = 0.1,
    ) -> None:
        """Serve VERSION of NAME to a share of keys beside the champion."""
        if not 0 < weight < 1:
            raise ConfigError(f"models canary: --weight must be in (0, 1), got {weight}")
        change(
            settings(),
            out,
            name,
            "model-canary",
            version,
            lambda state, champion: rollout.trial(state, champion, version, "canary", weight, f"canary {weight}"),
            trial=True,
        )

    @models_app.command("shadow")
    def models_shadow(name: str, version: int) -> None:
        """Score every request of NAME's pinned champion with VERSION too; its outputs go to the shadow topic."""
        change(
            settings(),
            out,
            name,
            "model-shadow",
            version,
            lambda state, champion: rollout.trial(state, champion, version, "shadow", 0.0, "shadow by command"),
            trial=True,
        )

    @models_app.command("serving")
    def models_serving(as_json: JsonOption = False) -> None:
        """The shared serving state of every model (what every worker serves)."""
        from streamer.adapters.redis_control import ControlChannel
        from streamer.adapters.redis_state import RedisStateStore

        s = settings()
        s.require_redis_url()
        store = RedisStateStore.from_settings(s.redis)
        states = ControlChannel(store.client, store.prefix).read()
        if as_json:
            out.print_json(json.dumps({name: json.loads(state.to_json()) for name, state in states.items()}))
            return
        table = Table("model", "champion", "canary", "shadow", "rolled back", "generation", "last change")
        for name, state in sorted(states.items()):
            table.add_row(
                Text(name),
                str(state.pin),
                ", ".join(f"{v}: {w:g}" for v, w in state.canary) or "-",
                str(state.shadow) if state.shadow is not None else "-",
                ", ".join(map(str, state.rolled_back)) or "-",
                str(state.generation),
                Text(state.reason or "-"),
            )
        out.print(table)

    @models_app.command("compare")
    def models_compare(
        name: str,
        versions: Annotated[
            str | None, typer.Option(help="Versions to compare, e.g. 1,2 (default: the champion and its candidate).")
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Champion and challenger (or canary) rolling metrics side by side, per window, from the shared labels."""
        from streamer.adapters.redis_state import RedisStateStore
        from streamer.core.evaluation import parse_windows

        s = settings()
        channel, on_disk, champion = context(s, name)
        if versions is not None:
            chosen = _versions(versions, on_disk, name, s.models.dir)
        else:
            candidate = channel.state(name).candidate
            chosen = [champion] + ([candidate] if candidate is not None else [v for v in on_disk if v != champion][-1:])
        store = RedisStateStore.from_settings(s.redis, windows=parse_windows(s.evaluation.windows))
        now = time.time()
        rows = []
        for window in store.windows:
            for version in chosen:
                m = store.metrics(name, str(version), window, now)
                rows.append(
                    {
                        "window": window.name,
                        "version": version,
                        "role": "champion" if version == champion else "challenger",
                        "labels": m.count,
                        "accuracy": m.accuracy,
                        "log_loss": m.log_loss,
                        "auc": m.auc,
                    }
                )
        if as_json:
            out.print_json(json.dumps(rows))
            return
        table = Table("window", "version", "role", "labels", "accuracy", "log loss", "AUC")
        for row in rows:
            table.add_row(
                row["window"],
                str(row["version"]),
                row["role"],
                str(row["labels"]),
                *(f"{row[k]:.4f}" if row["labels"] else "-" for k in ("accuracy", "log_loss", "auc")),
            )
        out.print(table)


def _versions(text: str, on_disk: list[int], name: str, models_dir: str) -> list[int]:
    """``--versions 1,2`` as versions of ``name`` that exist (a missing one is an error, not an empty column)."""
    chosen = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) not in on_disk:
            shown = ", ".join(map(str, on_disk))
            raise ConfigError(f"models compare: {name} has no version {part!r} in {models_dir} (versions: {shown})")
        chosen.append(int(part))
    if not chosen:
        raise ConfigError(f"models compare: --versions {text!r} names no version (e.g. --versions 1,2)")
    return chosen


def _trial_problem(name: str, kind: str, version: int, pinned: int | None, versions: list[int]) -> str | None:
    """Why ``version`` cannot go on trial (``kind``: a canary or shadow command), with the command to run.

    A trial needs a pinned champion. Without one the workers serve the highest version they loaded, and this
    command cannot choose the champion for the operator: the version to try usually *is* the highest (dropped in
    unpinned, it already serves every key), and the highest on disk may be one the workers refused. So the
    command refuses and names the pin to run; the pin is then a decision of its own, with its own event."""
    stage = kind.removeprefix("model-")
    others = [v for v in versions if v != version]
    if pinned == version:
        return f"{name} {version} is the pinned champion: a {stage} tries another version beside it"
    if pinned is not None:
        return None
    if not others:
        return f"{name} has only version {version}: a {stage} needs a champion beside it"
    suggestion = max(others)
    return (
        f"{name} has no pinned champion, so the workers serve its highest version and a version dropped in later "
        f"would take over under the {stage}: pin the champion first (`streamer models pin {name} {suggestion}`), "
        f"then start the {stage} again"
    )


def _emit(s: Any, kind: str, name: str, version: str, after: ControlState, champion_before: int) -> None:
    """The change as a model-events record, when Kafka is configured (best effort: the change is made)."""
    emit_event(s, kind, name, version, **rollout.change_fields(after, champion_before))


def emit_event(s: Any, kind: str, name: str, version: str, **fields: Any) -> None:
    """A command's model-events record (``"by": "command"``, the shape of every model event), when Kafka is
    configured; best effort: what the command did is done, an undelivered event is a warning."""
    if not s.kafka.bootstrap:
        return
    from confluent_kafka import Producer

    from streamer.adapters.kafka_admin import client_config, new_client

    event = {
        "type": kind,
        "model": name,
        "version": version,
        "time": time.time(),
        "worker": f"command@{socket.gethostname()}",
        "by": "command",
        **fields,
    }
    producer = new_client(Producer, client_config(s.kafka.bootstrap, s.kafka.client, **{"socket.timeout.ms": 5000}))
    producer.produce(s.topics.model_events, json.dumps(event).encode(), name.encode())
    if producer.flush(10):
        log.warning("the %s event was not delivered to %s", kind, s.topics.model_events)
