"""The model set and how it scores, built the same way for the worker, ``streamer serve`` and ``streamer batch``.

Repository -> catalog (the cards, the graphs beside them, the configured serving policy) -> scorer (ONNX
sessions) -> ``ServingModels``, the holder every mode scores through, so that the control channel and hot reload
reach each mode the same way. The limits a row is checked against, the graphs' entity lookups and the scoring
function are built here once too. Start-up refusals are one ``ConfigError`` line: no servable model, or a
configured default that is not loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.adapters import graph_repository, model_repository
from streamer.adapters.kafka_admin import KafkaAdmin
from streamer.adapters.onnx_scorer import OnnxScorer
from streamer.adapters.prometheus_metrics import WorkerMetrics
from streamer.adapters.redis_entities import EntityFeatureStore
from streamer.adapters.redis_entities import Lookup as EntityLookup
from streamer.batch.offline import ChunkScorer
from streamer.config import Settings
from streamer.core.cards import ModelCard
from streamer.core.errors import ConfigError
from streamer.core.graph.execution import Enrichment, Lookup, no_lookup
from streamer.core.graph.stages import Stage
from streamer.core.routing import Catalog, Serving
from streamer.core.scoring import Limits, ScoredBatch, score_records
from streamer.core.types import Records
from streamer.serving import ModelSet, ServingModels

log = logging.getLogger(__name__)

# Where the broker reports no max.message.bytes (the embedded one accepts anything, measured up to 20 MB):
# the largest request a consumer fetches by default (librdkafka's fetch.max.bytes), which comes back whole as
# its dead letter.
UNREPORTED_MAX_BYTES = 64 * 1024 * 1024
# A file takes a prediction of any size.
UNBOUNDED_OUTPUT_BYTES = 1 << 62

ScoreFn = Callable[[Records], ScoredBatch]
ObserveMatrix = Callable[[ModelCard, np.ndarray], None]


@dataclass(frozen=True, slots=True)
class Models:
    """The model set a mode serves and what the start-up scan found (the watcher starts from its refusals)."""

    serving: ServingModels
    scan: model_repository.ScanResult


def configured_serving(settings: Settings) -> dict[str, Serving]:
    """The serving policy of the configuration (``[models]`` pins, canary, shadow), per model name."""
    models = settings.models
    names = set(models.pins) | set(models.canary) | set(models.shadow)
    return {
        name: Serving(
            pin=models.pins.get(name),
            canary=tuple(sorted((int(v), w) for v, w in models.canary.get(name, {}).items())),
            shadow=models.shadow.get(name),
        )
        for name in names
    }


def load_models(settings: Settings) -> Models:
    """Every servable version of the repository and the declared graphs, under the configured policy."""
    scan = model_repository.scan(settings.require_models_dir(), settings.worker.intra_op_num_threads)
    if not scan.loaded:
        refused = "; ".join(str(e) for e in scan.refused.values()) or "the directory holds no <name>/<version>"
        raise ConfigError(f"no servable model in {settings.models.dir}: {refused}")
    cards = {name: {v: m.card for v, m in versions.items()} for name, versions in scan.loaded.items()}
    catalog = Catalog(cards, settings.models.default, dict(settings.models.pins), configured_serving(settings))
    directory = graph_repository.graphs_dir(settings.require_models_dir(), settings.models.graphs_dir)
    if directory is not None:
        catalog = graph_repository.with_graphs(catalog, graph_repository.read_graphs(directory))
    if catalog.default is not None and catalog.default not in catalog.cards:
        known = ", ".join(sorted(catalog.cards))
        raise ConfigError(f"models.default: {catalog.default!r} is not a loaded model or graph ({known})")
    return Models(ServingModels(ModelSet(catalog, OnnxScorer(scan.loaded))), scan)


def entity_lookup(settings: Settings, catalog: Catalog) -> Lookup:
    """The feature store of the graphs' enrichment stages: Redis when configured, else none (said once: every
    lookup then fails, and each stage's ``on_failure`` decides what its rows get)."""
    stages = [s for spec in catalog.graphs.values() for s in spec.stages.values() if s.kind == "enrich"]
    if not stages:
        return no_lookup
    if not settings.redis.url:
        log.warning(
            "no Redis configured: enrichment stages %s cannot read entity features (on_failure applies to every row)",
            ", ".join(f"{s.name} (on_failure = {s.on_failure})" for s in stages),
        )
        return no_lookup
    store = EntityFeatureStore.from_settings(settings.redis)

    def lookup(stage: Stage, keys: Sequence[bytes | None]) -> Enrichment:
        names = tuple(name for name, _ in stage.defaults)
        defaults = tuple(default for _, default in stage.defaults)
        found = store.lookup(EntityLookup(stage.entity, keys, names, defaults, stage.timeout_ms / 1000))
        return Enrichment(found.values, found.found, found.error)

    return lookup


@dataclass(frozen=True, slots=True)
class OutputLimits:
    """The largest prediction and dead letter the output topics take, and what the producer is sized for."""

    predictions: int
    dead_letters: int

    @property
    def producer(self) -> int:
        return min(max(self.predictions, self.dead_letters) + 1024, 1_000_000_000)

    @property
    def batch(self) -> int:
        return max(min(1_000_000, self.predictions - 1024, self.dead_letters - 1024), 1)


def output_limits(settings: Settings, admin: KafkaAdmin | None) -> OutputLimits:
    """``kafka.max_output_bytes`` when set; else what the output topics' ``max.message.bytes`` say (without a
    broker to ask -- ``streamer serve`` -- or where it reports none: ``UNREPORTED_MAX_BYTES``)."""
    configured = settings.kafka.max_output_bytes
    if configured:
        return OutputLimits(configured, configured)
    if admin is None:
        return OutputLimits(UNREPORTED_MAX_BYTES, UNREPORTED_MAX_BYTES)
    topics = settings.topics
    reported = admin.max_message_bytes([topics.predictions, topics.dlq])
    return OutputLimits(
        reported[topics.predictions] or UNREPORTED_MAX_BYTES, reported[topics.dlq] or UNREPORTED_MAX_BYTES
    )


def scoring_limits(settings: Settings, max_output_bytes: int) -> Limits:
    """What a request is checked against (size, rows) and the largest prediction it may produce."""
    worker = settings.worker
    return Limits(worker.max_message_bytes, worker.max_rows_per_request, max_output_bytes)


def batch_scorer(
    serving: ServingModels,
    limits: Limits,
    on_inference: Callable[[str, str, float], None],
    lookup: Lookup = no_lookup,
    observe_matrix: ObserveMatrix | None = None,
) -> ScoreFn:
    """The scoring function of the stream's batches and of on-demand requests: one batch, one model set, read
    once, so that a swap between batches never splits a batch; each ONNX call's time goes to
    ``on_inference(model, version, seconds)``."""

    def score(records: Records) -> ScoredBatch:
        models = serving.current

        def infer(card: ModelCard, matrix: Any) -> Any:
            started = time.perf_counter()
            try:
                return models.infer(card, matrix)
            finally:
                on_inference(card.name, str(card.version), time.perf_counter() - started)

        return score_records(
            records,
            models.catalog,
            infer,
            limits,
            observe_matrix=observe_matrix,
            lookup=lookup,
            clock=time.perf_counter,
        )

    return score


def chunk_scorer(settings: Settings, serving: ServingModels, max_output_bytes: int) -> ChunkScorer:
    """``streamer batch``'s scorer: the set as it stands now (the control channel applied), the worker's
    limits and lookups, so that offline equals online."""
    models = serving.current
    limits = scoring_limits(settings, max_output_bytes)
    return ChunkScorer(models.catalog, models.infer, limits, entity_lookup(settings, models.catalog))


def export_models(serving: ServingModels, metrics: WorkerMetrics) -> None:
    """The loaded versions, traffic shares and graphs on the metrics: now, and after every change of the set."""

    def export(_: ModelSet | None, models: ModelSet) -> None:
        catalog = models.catalog
        metrics.on_models(catalog.loaded(), catalog.shares(), catalog.graphs.values())

    export(None, serving.current)
    serving.listen(export)


def served(catalog: Catalog) -> str:
    """What a bare model name gets, per model, for the line each mode prints at start: ``fraud@1`` for a
    champion alone, ``fraud@2 90% + fraud@3 10% (canary)``, ``fraud@1 (shadow fraud@2)``."""
    parts, every = [], catalog.shares()
    for name in sorted(catalog.cards):
        shares = [(v, role, share) for n, v, role, share in every if n == name]
        answering = [(v, role, share) for v, role, share in shares if role != "shadow"]
        if len(answering) == 1:
            text = f"{name}@{answering[0][0]}"
        else:
            text = " + ".join(f"{name}@{v} {share:.0%}" for v, _, share in answering) + " (canary)"
        text += "".join(f" (shadow {name}@{v})" for v, role, _ in shares if role == "shadow")
        parts.append(text)
    return ", ".join(parts)
