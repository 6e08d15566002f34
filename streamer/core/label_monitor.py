"""What the label stream says of one model version: prequential metrics and concept-drift detection, as a value.

Every joined label of a version is one row of its label stream, in the order the labels were applied (all
workers' labels: the store appends them atomically with the join). ``LabelMonitor.learn_many`` takes the next
rows of that stream -- the served scores, the labels and the version's threshold -- and:

1. updates the **prequential** (progressive-validation) metrics: every label scores the prediction that was
   served before the model learnt from it, so the running accuracy and log loss over all labels are the
   test-then-train figures (equal to River's ``metrics.Accuracy`` and ``metrics.LogLoss`` fed the same
   stream; log loss clamps the score to ``[1e-15, 1 - 1e-15]`` as River does);
2. feeds the 0/1 error of each row (``label != (score >= threshold)``) to the version's concept-drift detector
   (``core.concept_drift``), and returns the detections: the position in the stream of the row at which it
   fired, the error rate before and after, and whether it rose (a drift to adapt to) or fell (the model
   recovered: ADWIN, two-sided, also reports that, and adapting to it would throw the recovery away).

Invariants: feeding a stream in one call or in any split gives the same state and detections (the detector and
the sums are sequential); ``encode``/``decode`` round-trip exactly, so whichever worker feeds the next rows
continues where the last one stopped (``services.concept_drift``: one decider per version at a time, by
compare-and-set on ``position``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from streamer.core.concept_drift import Adwin, Detector, DetectorSpec

_CLAMP = 1e-15


class MonitorState(msgspec.Struct, array_like=True):
    """The shared, serialisable part: where in the stream it is, the sums, the detector and its findings."""

    position: int = 0  # rows of the stream fed so far (the compare-and-set key of the decider)
    correct: int = 0
    log_loss_sum: float = 0.0
    detector: list[Any] | None = None  # ``Detector.state()``
    detections: int = 0
    rises: int = 0  # detections of a higher error rate (the others found it lower: the model recovered)
    last_detection: int = -1  # stream position of the last detection
    error_rate_before: float = math.nan  # the detector's estimate just before the last detection
    adaptations: int = 0  # adaptations applied to the version's learner (``learner.adapted``)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(MonitorState).decode


@dataclass(frozen=True, slots=True)
class Detection:
    """A detection at stream ``position``; ``error_rate_before`` is the window's error rate before it, and
    ``error_rate_after`` the error rate of the window the detector kept (the new concept's rows)."""

    position: int
    error_rate_before: float
    error_rate_after: float
    rising: bool  # the error rate went up (a drift to adapt to), not down (a recovery)


@dataclass(slots=True)
class LabelMonitor:
    spec: DetectorSpec
    state: MonitorState = field(default_factory=MonitorState)
    _detector: Detector | None = None

    def __post_init__(self) -> None:
        self._detector = self.spec.resume(self.state.detector)

    @property
    def labels(self) -> int:
        return self.state.position

    @property
    def accuracy(self) -> float:
        """Prequential accuracy over every label so far (NaN before the first)."""
        return self.state.correct / self.state.position if self.state.position else math.nan

    @property
    def log_loss(self) -> float:
        return self.state.log_loss_sum / self.state.position if self.state.position else math.nan

    @property
    def error_rate(self) -> float:
        """The detector's current estimate of the error rate (its window's mean), NaN without a detector."""
        if self._detector is None or not self.state.position:
            return math.nan
        return float(self._detector.estimation)

    def learn_many(self, scores: np.ndarray, labels: np.ndarray, threshold: float) -> list[Detection]:
        """Feed the next rows of the stream; the detections they caused, in order."""
        scores = np.asarray(scores, dtype=np.float64)
        positive = np.asarray(labels, dtype=np.float64) >= 0.5
        wrong = (scores >= threshold) != positive
        clipped = np.clip(scores, _CLAMP, 1 - _CLAMP)
        losses = np.where(positive, -np.log(clipped), -np.log(1 - clipped))
        state = self.state
        found: list[Detection] = []
        detector = self._detector
        for i, (error, loss) in enumerate(zip(wrong.tolist(), losses.tolist(), strict=True)):
            state.log_loss_sum += loss  # sequential: the same sum in any split of the stream
            before = detector.estimation if detector is not None else math.nan
            if detector is not None and detector.update(1.0 if error else 0.0):
                after = float(detector.estimation)
                rising = after > before if isinstance(detector, Adwin) else detector.rising
                found.append(Detection(state.position + i, float(before), after, rising))
                state.detections += 1
                state.rises += int(rising)
                state.last_detection = state.position + i
                state.error_rate_before = float(before)
        state.correct += int(np.count_nonzero(~wrong))
        state.position += len(wrong)
        state.detector = None if detector is None else detector.state()
        return found

    def encode(self) -> bytes:
        return _encode(self.state)

    @classmethod
    def decode(cls, spec: DetectorSpec, data: bytes | None) -> LabelMonitor:
        """The monitor saved by ``encode`` (a fresh one for ``None``)."""
        return cls(spec, MonitorState() if data is None else _decode(data))
