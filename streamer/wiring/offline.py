"""``streamer batch``'s scorer, built like a worker's: the same model set, limits and lookups, and the serving
state a worker serves now (the control channel read once, before the first row: a run scores with one state).
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.batch.offline import ChunkScorer
from streamer.config import Settings
from streamer.wiring.models import chunk_scorer, load_models, served
from streamer.wiring.serving_state import control_channel, read_serving_state


@dataclass(frozen=True, slots=True)
class OfflineScorer:
    scorer: ChunkScorer
    served: str  # what a bare model name gets, for the line the command prints first


def offline_scorer(settings: Settings, max_output_bytes: int) -> OfflineScorer:
    models = load_models(settings)
    read_serving_state(settings, models.serving, control_channel(settings))
    scorer = chunk_scorer(settings, models.serving, max_output_bytes)
    return OfflineScorer(scorer, served(scorer.catalog))
