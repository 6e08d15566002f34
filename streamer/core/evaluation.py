"""Rolling evaluation of a model version from joined labels: mergeable window maths, no I/O.

Every window (e.g. 5 min, 1 h, 24 h) is cut into ``buckets`` equal time buckets. A bucket holds one vector
of sufficient statistics (``stats_of``: layout ``COUNT`` ... the score histograms), and statistics only ever
add up, so:
- a batch of (score, label) pairs adds its ``stats_of`` to the current bucket of each window;
- buckets from several workers merge by addition (in Redis they are hashes incremented atomically);
- a window's metrics are ``metrics_of`` the sum of the buckets inside the window ending ``now``
  (``WindowSpec.live_buckets``).

Invariant, property-tested against an in-memory oracle (``tests/rolling_evaluation.py``): the metrics of a
window equal a naive recomputation over exactly the events whose bucket lies in the window; merging the states
of two workers equals one worker seeing both streams.

Binary classification: accuracy and precision/recall at the card's threshold, log loss, and AUC estimated from
score histograms of positives and negatives (``SCORE_BINS`` bins; ties inside a bin count one half). For
other tasks only ``count``, accuracy (``label == round(score)``) and squared error are meaningful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.core.errors import ConfigError

SCORE_BINS = 20
EPS = 1e-15
# Layout of a statistics vector.
COUNT, CORRECT, LOG_LOSS, SQUARED_ERROR, TP, FP, FN = range(7)
HISTOGRAMS = 7
STATS_SIZE = HISTOGRAMS + 2 * SCORE_BINS  # positives' histogram, then negatives'


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    length_s: float
    buckets: int = 12

    @property
    def bucket_s(self) -> float:
        return self.length_s / self.buckets

    def bucket_of(self, now: float) -> int:
        return math.floor(now / self.bucket_s)

    def live_buckets(self, now: float) -> range:
        """The buckets inside the window ending at ``now`` (the current one and the ``buckets - 1`` before)."""
        current = self.bucket_of(now)
        return range(current - self.buckets + 1, current + 1)


DEFAULT_WINDOWS = (WindowSpec("5m", 300), WindowSpec("1h", 3600), WindowSpec("24h", 86400))
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_windows(text: str, where: str = "windows") -> tuple[WindowSpec, ...]:
    """``"5m,1h,24h"`` -> windows named as written, 12 buckets each; ``ConfigError`` on anything else."""
    windows = []
    for part in (p.strip() for p in text.split(",")):
        number, unit = part[:-1], part[-1:]
        if unit not in _UNITS or not number.isdigit() or int(number) == 0:
            raise ConfigError(f"{where}: {part!r} is not a window like 30s, 5m, 1h or 7d")
        windows.append(WindowSpec(part, int(number) * _UNITS[unit]))
    if len({w.name for w in windows}) != len(windows):
        raise ConfigError(f"{where}: duplicate windows in {text!r}")
    return tuple(windows)


@dataclass(frozen=True, slots=True)
class Metrics:
    count: int
    accuracy: float
    log_loss: float
    precision: float
    recall: float
    auc: float
    rmse: float


def stats_of(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Sufficient statistics of a batch of (score, label) pairs, as one vector (float64)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    stats = np.zeros(STATS_SIZE)
    if scores.size == 0:
        return stats
    predicted = scores >= threshold
    positive = labels >= 0.5
    clipped = np.clip(scores, EPS, 1 - EPS)
    stats[COUNT] = scores.size
    stats[CORRECT] = np.count_nonzero(predicted == positive)
    stats[LOG_LOSS] = float(-np.sum(np.where(positive, np.log(clipped), np.log(1 - clipped))))
    stats[SQUARED_ERROR] = float(np.sum((scores - labels) ** 2))
    stats[TP] = np.count_nonzero(predicted & positive)
    stats[FP] = np.count_nonzero(predicted & ~positive)
    stats[FN] = np.count_nonzero(~predicted & positive)
    bins = np.clip((np.clip(scores, 0.0, 1.0) * SCORE_BINS).astype(np.int64), 0, SCORE_BINS - 1)
    stats[HISTOGRAMS : HISTOGRAMS + SCORE_BINS] = np.bincount(bins[positive], minlength=SCORE_BINS)
    stats[HISTOGRAMS + SCORE_BINS :] = np.bincount(bins[~positive], minlength=SCORE_BINS)
    return stats


def metrics_of(stats: np.ndarray) -> Metrics:
    count = int(stats[COUNT])
    if count == 0:
        nan = float("nan")
        return Metrics(0, nan, nan, nan, nan, nan, nan)
    tp, fp, fn = stats[TP], stats[FP], stats[FN]
    positives = stats[HISTOGRAMS : HISTOGRAMS + SCORE_BINS]
    negatives = stats[HISTOGRAMS + SCORE_BINS :]
    n_pos, n_neg = positives.sum(), negatives.sum()
    if n_pos > 0 and n_neg > 0:
        below = np.concatenate(([0.0], np.cumsum(negatives)[:-1]))
        auc = float(np.sum(positives * (below + 0.5 * negatives)) / (n_pos * n_neg))
    else:
        auc = float("nan")
    return Metrics(
        count=count,
        accuracy=float(stats[CORRECT] / count),
        log_loss=float(stats[LOG_LOSS] / count),
        precision=float(tp / (tp + fp)) if tp + fp > 0 else float("nan"),
        recall=float(tp / (tp + fn)) if tp + fn > 0 else float("nan"),
        auc=auc,
        rmse=math.sqrt(stats[SQUARED_ERROR] / count),
    )
