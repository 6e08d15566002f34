"""The concept-drift watch without Redis: a store that fails is counted and decides nothing, a recovery (a fall of
the error rate) is reported but never adapts a learner, and the monitor tells rises from falls."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamer.core.cards import parse_card
from streamer.core.concept_drift import DetectorSpec, PageHinkleyParams
from streamer.core.errors import StateStoreError
from streamer.core.label_monitor import LabelMonitor
from streamer.core.routing import Catalog
from streamer.services.concept_drift import ConceptDriftWatch

CARD = {
    "name": "m",
    "version": 1,
    "task": "binary-classification",
    "features": ["a"],
    "input": "x",
    "sha256": "0" * 64,
    "outputs": {"score": "p[:,1]"},
}


class Down:
    def read(self, *args: Any, **kwargs: Any) -> Any:
        raise StateStoreError("redis concept_drift read: refused", retriable=True)


class Observer:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_redis_error(self, operation: str) -> None:
        self.errors.append(operation)


def test_redis_down_is_counted_and_nothing_is_decided() -> None:
    card = parse_card(CARD, "card.toml")
    observer, events = Observer(), []
    watch = ConceptDriftWatch(Down(), lambda: Catalog({"m": {1: card}}), dict, events.append, observer)  # type: ignore[arg-type]
    assert watch.check_once() == [] and observer.errors == ["concept_drift"] and events == []


def test_a_card_without_a_detector_is_not_watched() -> None:
    card = parse_card({**CARD, "concept_drift": {"detector": "none"}}, "card.toml")
    observer = Observer()
    watch = ConceptDriftWatch(Down(), lambda: Catalog({"m": {1: card}}), dict, print, observer)  # type: ignore[arg-type]
    assert watch.check_once() == [] and observer.errors == []


def errors(rates: list[tuple[float, int]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels whose errors (at threshold 0.5) come at the given rates, in order."""
    rng = np.random.default_rng(seed)
    wrong = np.concatenate([rng.random(n) < rate for rate, n in rates])
    labels = rng.integers(0, 2, len(wrong))
    scores = np.where(wrong, 1 - labels, labels) * 0.8 + 0.1
    return scores, labels


def test_the_monitor_tells_a_rise_from_a_fall_for_both_detectors() -> None:
    scores, labels = errors([(0.05, 1500), (0.6, 1500), (0.05, 1500)])
    for spec in (DetectorSpec(), DetectorSpec("page-hinkley", page_hinkley=PageHinkleyParams(mode="both"))):
        monitor = LabelMonitor(spec)
        found = monitor.learn_many(scores, labels, 0.5)
        rises = [d.position for d in found if d.rising]
        falls = [d.position for d in found if not d.rising]
        assert found[0].rising and 1500 <= found[0].position < 1800, (spec.kind, found)
        assert [f for f in falls if f >= 3000] and all(r < 3000 for r in rises), (spec.kind, found)
        assert monitor.state.rises == len(rises) and monitor.state.detections == len(found)
        assert abs(monitor.accuracy - np.mean((scores >= 0.5) == (labels == 1))) < 1e-12
