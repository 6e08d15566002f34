"""What a mode serves, kept current the same way in every mode: the control channel and the model repository.

- The control channel (pins, canaries, shadows, rollbacks, a rollout's champion: ``adapters.redis_control``)
  is applied to the model set before anything is scored. A worker and ``streamer serve`` keep following it
  (``follow_serving_state``: every ``models.control_interval_s``); ``streamer batch`` reads it once
  (``read_serving_state``); ``models list`` and the lifecycle commands ask for the policy alone
  (``serving_policy``). Without Redis the configuration decides; with Redis down, the configured policy
  serves, said once (one warning line) and counted where there are metrics.
- The model repository is watched (``watch_models``, when ``models.watch``): every change is a log line and
  a metric in every mode; the worker adds its own listeners (drift counts, online models, model events).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from streamer.adapters.model_repository import ScanResult
from streamer.adapters.onnx_models import LoadedModel
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.adapters.redis_control import ControlChannel
from streamer.adapters.redis_state import RedisStateStore
from streamer.config import Settings
from streamer.core.errors import ModelError, StateStoreError
from streamer.core.rollout import effective_serving
from streamer.core.routing import Serving
from streamer.services.model_watcher import ModelWatcher
from streamer.services.serving_control import RedisErrors, ServingControl
from streamer.serving import ServingModels
from streamer.wiring.models import configured_serving

log = logging.getLogger(__name__)


def control_channel(settings: Settings, store: RedisStateStore | None = None) -> ControlChannel | None:
    """The control channel in Redis (through ``store``'s client when the caller has one); None without Redis."""
    if not settings.redis.url:
        return None
    if store is None:
        store = RedisStateStore.from_settings(settings.redis)
    return ControlChannel(store.client, store.prefix)


def follow_serving_state(
    settings: Settings, serving: ServingModels, observer: RedisErrors | None, channel: ControlChannel | None
) -> ServingControl | None:
    """Started: the shared state applied now (before the first batch or request), then re-read every
    ``models.control_interval_s`` for as long as the process runs. None without Redis."""
    if channel is None:
        return None
    control = ServingControl(
        channel, serving, configured_serving(settings), observer, settings.models.control_interval_s
    )
    control.start()
    return control


def read_serving_state(settings: Settings, serving: ServingModels, channel: ControlChannel | None) -> None:
    """The shared state applied once, now (``streamer batch``: a run scores with the state it started with)."""
    if channel is not None:
        ServingControl(channel, serving, configured_serving(settings), None).read_at_start()


def serving_policy(settings: Settings) -> dict[str, Serving]:
    """The effective serving policy per model, without loading a model set (``models list``, the lifecycle
    commands): the control channel's where it has a state, else the configuration's."""
    configured = configured_serving(settings)
    channel = control_channel(settings)
    if channel is None:
        return configured
    try:
        return effective_serving(configured, channel.read())
    except StateStoreError as exc:
        log.warning("cannot read the serving state from Redis (%s): serving the configured policy", exc)
        return configured


class ModelChanges(Protocol):
    """A listener of the repository's changes, beyond the log line and the metric every mode gets."""

    def loaded(self, model: LoadedModel) -> None: ...
    def refused(self, path: Path, error: ModelError) -> None: ...
    def removed(self, ref: str) -> None: ...


def watch_models(
    settings: Settings,
    serving: ServingModels,
    scan: ScanResult,
    metrics: WorkerMetrics,
    listeners: Sequence[ModelChanges] = (),
) -> ModelWatcher | None:
    """Hot reload, started (None unless ``models.watch``). The versions the start-up scan refused are reported
    first, like any later refusal, and are not retried until their files change."""
    if not settings.models.watch:
        return None

    def loaded(model: LoadedModel) -> None:
        metrics.on_model_change(model.card.name, "loaded")
        for listener in listeners:
            listener.loaded(model)

    def refused(path: Path, error: ModelError) -> None:
        log.error("refused model %s@%s: %s", path.parent.name, path.name, error)
        metrics.on_model_change(path.parent.name, "refused")
        for listener in listeners:
            listener.refused(path, error)

    def removed(ref: str) -> None:
        metrics.on_model_change(ref.partition("@")[0], "removed")
        for listener in listeners:
            listener.removed(ref)

    for path, error in scan.refused.items():
        refused(path, error)
    watcher = ModelWatcher(
        settings.require_models_dir(),
        serving,
        on_loaded=loaded,
        on_refused=refused,
        on_removed=removed,
        interval_s=settings.models.watch_interval_s,
        settle_s=settings.models.settle_s,
        intra_op_num_threads=settings.worker.intra_op_num_threads,
    )
    watcher.refused_at_start(scan.refused)
    watcher.start()
    return watcher
