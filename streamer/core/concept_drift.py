"""Concept drift: change detectors on a model version's 0/1 error stream (ADWIN, Page-Hinkley), pure values.

Feature drift (``core.drift``, PSI) says the inputs moved; it cannot see the rule behind the labels change while
the inputs stay put. These detectors watch what the labels say of the model: one value per joined label, 1 when
the served prediction was wrong, 0 when it was right, in the order the labels were applied. A detection means
the error rate changed -- the concept the model learnt is no longer the one labelling the stream.

- ``Adwin`` (Bifet and Gavaldà, 2007): ADaptive WINdowing keeps the recent values in exponential buckets
  (``max_buckets`` per size, sizes 1, 2, 4, ...) and, every ``clock`` values once it holds more than
  ``grace_period``, checks every cut of its window into an older and a newer part: when their means differ by
  more than the Hoeffding-style bound at confidence ``delta`` it drops the oldest bucket and reports a change.
- ``PageHinkley`` (Page, 1954): a cumulative sum of the deviations from the running mean, faded by ``alpha``;
  a change once it strays more than ``threshold`` from its extreme, after ``min_instances`` values.

Both follow River's semantics exactly (``river.drift.ADWIN`` and ``river.drift.PageHinkley``, River 0.26; the
property tests replay the same streams through both and compare every detection): the same parameters and
defaults, the same floating-point order of operations, and the detector starts afresh on the value after a
detection. Invariants: ``update`` is a pure function of the detector's state and the value; ``state()`` /
``from_state`` round-trip exactly (the state is plain numbers and lists, shared between workers as MessagePack),
so a detector resumed elsewhere detects exactly where the original would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DETECTORS = ("adwin", "page-hinkley", "none")


@dataclass(frozen=True, slots=True)
class AdwinParams:
    """River's ADWIN parameters and defaults: significance ``delta``, a check every ``clock`` values, buckets
    kept per size before two merge, the shortest sub-window a cut may leave, values before the first check."""

    delta: float = 0.002
    clock: int = 32
    max_buckets: int = 5
    min_window_length: int = 5
    grace_period: int = 10

    def problem(self) -> str | None:
        if not 0 < self.delta < 1:
            return "delta must be in (0, 1)"
        if self.clock < 1 or self.max_buckets < 1 or self.min_window_length < 1 or self.grace_period < 0:
            return "clock, max_buckets and min_window_length must be at least 1, grace_period not negative"
        return None


@dataclass(frozen=True, slots=True)
class PageHinkleyParams:
    """River's Page-Hinkley parameters and defaults; ``mode`` "up" watches only a rising error rate."""

    min_instances: int = 30
    delta: float = 0.005
    threshold: float = 50.0
    alpha: float = 1 - 0.0001
    mode: str = "both"

    def problem(self) -> str | None:
        if self.mode not in ("up", "down", "both"):
            return f"mode must be up, down or both, got {self.mode!r}"
        if self.min_instances < 1 or not self.threshold > 0 or not 0 < self.alpha <= 1 or not self.delta >= 0:
            return "min_instances >= 1, threshold > 0, alpha in (0, 1] and delta >= 0 are required"
        return None


class Adwin:
    """ADWIN on a stream of numbers (module docstring). ``update`` returns whether this value made a detection."""

    kind = "adwin"

    def __init__(self, params: AdwinParams = AdwinParams()) -> None:
        self.params = params
        self.drift_detected = False
        self.n_detections = 0
        self._start()

    def _start(self) -> None:
        # levels[i]: the buckets of 2**i values, oldest first, as [total, variance] pairs
        self.levels: list[list[list[float]]] = [[]]
        self.total = 0.0
        self.variance = 0.0  # sum of squared deviations from the window's mean
        self.width = 0.0
        self.tick = 0

    @property
    def estimation(self) -> float:
        """The mean of the window (the error rate ADWIN currently believes in)."""
        return self.total / self.width if self.width else 0.0

    def update(self, x: float) -> bool:
        if self.drift_detected:
            self._start()  # a detection restarts the window on the next value (River's behaviour)
        self._insert(float(x))
        self.drift_detected = self._detect()
        if self.drift_detected:
            self.n_detections += 1
        return self.drift_detected

    def _insert(self, value: float) -> None:
        self.levels[0].append([value, 0.0])
        self.width += 1.0
        increment = 0.0
        if self.width > 1.0:
            deviation = value - self.total / (self.width - 1.0)
            increment = (self.width - 1.0) * deviation * deviation / self.width
        self.variance += increment
        self.total += value
        self._merge()

    def _merge(self) -> None:
        """A level holding ``max_buckets + 1`` buckets merges its two oldest into one of the next level."""
        full, level = self.params.max_buckets + 1, 0
        while len(self.levels[level]) == full:
            size = float(1 << level)
            (t0, v0), (t1, v1) = self.levels[level][0], self.levels[level][1]
            mu0, mu1 = t0 / size, t1 / size
            merged = [t0 + t1, v0 + v1 + size * 0.5 * (mu0 - mu1) * (mu0 - mu1)]
            if level + 1 == len(self.levels):
                self.levels.append([])
            self.levels[level + 1].append(merged)
            del self.levels[level][:2]
            if len(self.levels[level + 1]) <= self.params.max_buckets:
                break
            level += 1

    def _drop_oldest(self) -> None:
        last = len(self.levels) - 1
        size = float(1 << last)
        total, variance = self.levels[last][0]
        mean = total / size
        self.width -= size
        self.total -= total
        window_mean = self.total / self.width
        spread = size * self.width * (mean - window_mean) * (mean - window_mean) / (size + self.width)
        self.variance -= variance + spread
        del self.levels[last][0]
        if not self.levels[last]:
            self.levels.pop()

    def _detect(self) -> bool:
        p = self.params
        self.tick += 1
        if self.tick % p.clock != 0 or self.width <= p.grace_period:
            return False
        detected, shrinking = False, True
        while shrinking:
            shrinking = self._cut_found()
            detected = detected or shrinking
        return detected

    def _cut_found(self) -> bool:
        """Scan the cuts from the oldest bucket on; at the first significant one drop the oldest bucket."""
        least = self.params.min_window_length
        n0, n1, u0, u1 = 0.0, self.width, 0.0, self.total
        for level in range(len(self.levels) - 1, -1, -1):
            size = float(1 << level)
            buckets = self.levels[level]
            for k, (total, _) in enumerate(buckets):
                n0 += size
                n1 -= size
                u0 += total
                u1 -= total
                if level == 0 and k == len(buckets) - 1:
                    return False  # the newest bucket: no cut left
                if n1 >= least and n0 >= least and self._significant(n0, n1, u0 / n0 - u1 / n1) and self.width > 0:
                    self._drop_oldest()
                    return True
        return False

    def _significant(self, n0: float, n1: float, delta_mean: float) -> bool:
        least = self.params.min_window_length
        delta_prime = math.log(2.0 * math.log(self.width) / self.params.delta)
        m_recip = 1.0 / (n0 - least + 1.0) + 1.0 / (n1 - least + 1.0)
        epsilon = (
            math.sqrt(2.0 * m_recip * (self.variance / self.width) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
        )
        return abs(delta_mean) > epsilon

    def state(self) -> list[Any]:
        return [
            self.drift_detected,
            self.n_detections,
            self.levels,
            self.total,
            self.variance,
            self.width,
            self.tick,
        ]

    @classmethod
    def from_state(cls, params: AdwinParams, state: list[Any]) -> Adwin:
        detector = cls(params)
        (detector.drift_detected, detector.n_detections, levels, detector.total, detector.variance) = state[:5]
        detector.width, detector.tick = state[5:7]
        detector.levels = [[[float(t), float(v)] for t, v in level] for level in levels]
        return detector


class PageHinkley:
    """Page-Hinkley on a stream of numbers (module docstring)."""

    kind = "page-hinkley"

    def __init__(self, params: PageHinkleyParams = PageHinkleyParams()) -> None:
        self.params = params
        self.drift_detected = False
        self.rising = False  # whether the last detection was of a rise
        self.n_detections = 0
        self._start()

    def _start(self) -> None:
        self.count = 0.0
        self.mean = 0.0
        self.sum_increase = 0.0
        self.sum_decrease = 0.0
        self.min_increase = math.inf
        self.max_decrease = -1.0

    @property
    def estimation(self) -> float:
        return self.mean

    def update(self, x: float) -> bool:
        p = self.params
        if self.drift_detected:
            self._start()
            self.drift_detected = False
        self.count += 1.0
        self.mean += (1.0 / self.count) * (x - self.mean)
        deviation = x - self.mean
        self.sum_increase = p.alpha * self.sum_increase + deviation - p.delta
        self.sum_decrease = p.alpha * self.sum_decrease + deviation + p.delta
        self.min_increase = min(self.min_increase, self.sum_increase)
        self.max_decrease = max(self.max_decrease, self.sum_decrease)
        if self.count >= p.min_instances:
            rising = self.sum_increase - self.min_increase > p.threshold
            falling = self.max_decrease - self.sum_decrease > p.threshold
            self.drift_detected = {"up": rising, "down": falling, "both": rising or falling}[p.mode]
            self.rising = rising and p.mode != "down"
            if self.drift_detected:
                self.n_detections += 1
        return self.drift_detected

    def state(self) -> list[Any]:
        return [
            self.drift_detected,
            self.n_detections,
            self.count,
            self.mean,
            self.sum_increase,
            self.sum_decrease,
            # inf is not MessagePack-portable everywhere: None stands for "no value yet"
            None if math.isinf(self.min_increase) else self.min_increase,
            self.max_decrease,
        ]

    @classmethod
    def from_state(cls, params: PageHinkleyParams, state: list[Any]) -> PageHinkley:
        detector = cls(params)
        (detector.drift_detected, detector.n_detections, detector.count, detector.mean) = state[:4]
        detector.sum_increase, detector.sum_decrease, low, detector.max_decrease = state[4:8]
        detector.min_increase = math.inf if low is None else low
        return detector


Detector = Adwin | PageHinkley


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """Which detector watches a version's error stream (``[concept_drift]`` in its card), with its parameters."""

    kind: str = "adwin"
    adwin: AdwinParams = AdwinParams()
    page_hinkley: PageHinkleyParams = PageHinkleyParams()

    def problem(self) -> str | None:
        if self.kind not in DETECTORS:
            return f"detector must be one of {', '.join(DETECTORS)}, got {self.kind!r}"
        return self.adwin.problem() if self.kind == "adwin" else self.page_hinkley.problem()

    def new(self) -> Detector | None:
        if self.kind == "adwin":
            return Adwin(self.adwin)
        if self.kind == "page-hinkley":
            return PageHinkley(self.page_hinkley)
        return None

    def resume(self, state: list[Any] | None) -> Detector | None:
        """The detector saved as ``state`` (``Detector.state()``), or a new one when there is none."""
        if state is None:
            return self.new()
        if self.kind == "adwin":
            return Adwin.from_state(self.adwin, state)
        if self.kind == "page-hinkley":
            return PageHinkley.from_state(self.page_hinkley, state)
        return None


def detections(detector: Detector, values: Iterable[float]) -> list[int]:
    """Feed ``values`` in order; the positions (0-based, in ``values``) at which the detector fired."""
    return [i for i, x in enumerate(values) if detector.update(x)]
