"""The concept-drift detectors and prequential metrics against River (a test-only oracle): same detections, same
figures, on the same streams; and the resumable state that lets another worker continue a detector."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift, metrics

from streamer.core.concept_drift import Adwin, AdwinParams, DetectorSpec, PageHinkley, PageHinkleyParams, detections
from streamer.core.label_monitor import LabelMonitor


@st.composite
def error_streams(draw: st.DrawFn) -> list[float]:
    """0/1 error streams with up to three changes of rate, some thousands of values long."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(draw(st.integers(1, 4))):
        rate = draw(st.floats(0.0, 1.0))
        pieces.append((rng.random(draw(st.integers(1, 1500))) < rate).astype(float))
    return np.concatenate(pieces).tolist()


adwin_params = st.builds(
    AdwinParams,
    delta=st.sampled_from([0.002, 0.01, 0.1, 1e-5]),
    clock=st.sampled_from([1, 4, 32]),
    max_buckets=st.integers(2, 6),
    min_window_length=st.integers(1, 10),
    grace_period=st.integers(0, 40),
)
ph_params = st.builds(
    PageHinkleyParams,
    min_instances=st.integers(1, 60),
    delta=st.sampled_from([0.0, 0.005, 0.05]),
    threshold=st.sampled_from([5.0, 20.0, 50.0]),
    alpha=st.sampled_from([1.0, 1 - 0.0001, 0.99]),
    mode=st.sampled_from(["up", "down", "both"]),
)


def river_detections(detector: drift.ADWIN | drift.PageHinkley, values: list[float]) -> list[int]:
    found = []
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


@settings(max_examples=60, deadline=None)
@given(error_streams(), adwin_params)
def test_adwin_detects_exactly_where_river_does(values: list[float], params: AdwinParams) -> None:
    ours = Adwin(params)
    theirs = drift.ADWIN(params.delta, params.clock, params.max_buckets, params.min_window_length, params.grace_period)
    assert detections(ours, values) == river_detections(theirs, values)
    assert ours.width == theirs.width and ours.total == theirs.total
    assert ours.estimation == theirs.estimation


@settings(max_examples=60, deadline=None)
@given(error_streams(), ph_params)
def test_page_hinkley_detects_exactly_where_river_does(values: list[float], params: PageHinkleyParams) -> None:
    theirs = drift.PageHinkley(params.min_instances, params.delta, params.threshold, params.alpha, params.mode)
    assert detections(PageHinkley(params), values) == river_detections(theirs, values)


@settings(max_examples=40, deadline=None)
@given(error_streams(), st.sampled_from(["adwin", "page-hinkley"]), st.data())
def test_a_resumed_detector_continues_exactly(values: list[float], kind: str, data: st.DataObject) -> None:
    spec = DetectorSpec(kind=kind, adwin=AdwinParams(clock=data.draw(st.sampled_from([1, 32]))))
    whole = spec.new()
    assert whole is not None
    expected = detections(whole, values)
    cut = data.draw(st.integers(0, len(values)))
    first = spec.new()
    assert first is not None
    found = detections(first, values[:cut])
    resumed = spec.resume(first.state())
    assert resumed is not None
    found += [cut + i for i in detections(resumed, values[cut:])]
    assert found == expected
    assert resumed.state() == whole.state()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 800), st.floats(0.05, 0.95), st.lists(st.integers(1, 200)))
def test_prequential_equals_rivers_metrics(seed: int, rows: int, threshold: float, splits: list[int]) -> None:
    rng = np.random.default_rng(seed)
    scores = np.where(rng.random(rows) < 0.05, rng.choice([0.0, 1.0], rows), rng.random(rows))
    labels = (rng.random(rows) < 0.4).astype(np.int64)
    accuracy, log_loss = metrics.Accuracy(), metrics.LogLoss()
    for s, y in zip(scores.tolist(), labels.tolist(), strict=True):
        accuracy.update(bool(y), s >= threshold)
        log_loss.update(bool(y), s)
    monitor = LabelMonitor(DetectorSpec())
    start = 0
    for size in [*splits, rows]:
        end = min(start + size, rows)
        monitor.learn_many(scores[start:end], labels[start:end], threshold)
        start = end
        if start == rows:
            break
    assert monitor.labels == rows
    assert monitor.accuracy == accuracy.get()
    assert math.isclose(monitor.log_loss, log_loss.get(), rel_tol=1e-9, abs_tol=1e-12)
    encoded = LabelMonitor.decode(DetectorSpec(), monitor.encode())
    assert encoded.encode() == monitor.encode() and encoded.accuracy == monitor.accuracy


def test_adwin_finds_an_abrupt_rise_of_the_error_rate_within_40_labels() -> None:
    rng = np.random.default_rng(3)
    values = (np.concatenate([rng.random(900) < 0.06, rng.random(300) < 0.63])).astype(float).tolist()
    found = detections(Adwin(), values)
    assert found and 900 <= found[0] < 940
