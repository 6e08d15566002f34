"""Feature drift: the population stability index (PSI) of served features against the training reference.

A model card may carry, per feature, the training distribution as quantile bins (``[reference]``: ``edges``,
the inner cut points, and ``fractions``, the share of training rows in each of the ``len(edges) + 1`` bins).
The worker counts the served values into the same bins (``FeatureCounts``, whole matrices at a time) and, once a
window holds enough rows, computes per feature

    PSI = sum over bins of (observed - expected) * ln(observed / expected)

with both shares floored at ``PSI_FLOOR`` so that an empty bin gives a large but finite value. The usual
reading: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a major one. Values are binned with
``side="right"``: a value equal to an edge goes to the bin above it, as ``reference_of`` built it; NaN (a
missing value) falls in the last bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PSI_FLOOR = 1e-4


@dataclass(frozen=True, slots=True)
class FeatureReference:
    edges: tuple[float, ...]
    fractions: tuple[float, ...]

    def check(self) -> str | None:
        """Why this reference is unusable, or None."""
        if len(self.fractions) != len(self.edges) + 1:
            return f"{len(self.fractions)} fractions for {len(self.edges)} edges (need edges + 1)"
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            return "edges must be strictly increasing"
        if any(f < 0 or not math.isfinite(f) for f in self.fractions) or abs(sum(self.fractions) - 1.0) > 1e-3:
            return "fractions must be non-negative and sum to 1"
        return None


def reference_of(values: np.ndarray, bins: int = 10) -> FeatureReference:
    """Quantile bins of a training column (ties merged, so a discrete feature gets fewer bins)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return FeatureReference(tuple(float(e) for e in edges), tuple(float(c) for c in counts / counts.sum()))


def psi(expected: Sequence[float], observed_counts: Sequence[float]) -> float:
    expected_share = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    counts = np.asarray(observed_counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    observed_share = np.maximum(counts / total, PSI_FLOOR)
    return float(np.sum((observed_share - expected_share) * np.log(observed_share / expected_share)))


class FeatureCounts:
    """Bin counts of served rows, per feature of one model version, since the last ``take``."""

    def __init__(self, features: Sequence[str], reference: Mapping[str, FeatureReference]) -> None:
        self.columns = [
            (i, name, np.asarray(reference[name].edges)) for i, name in enumerate(features) if name in reference
        ]
        self.reference = reference
        self.counts = {name: np.zeros(len(edges) + 1, dtype=np.int64) for _, name, edges in self.columns}
        self.rows = 0

    def add(self, matrix: np.ndarray) -> None:
        for column, name, edges in self.columns:
            values = matrix[:, column]
            bins = np.searchsorted(edges, values, side="right")
            bins[np.isnan(values)] = len(edges)
            self.counts[name] += np.bincount(bins, minlength=len(edges) + 1)
        self.rows += matrix.shape[0]

    def take(self) -> tuple[int, dict[str, float]]:
        """Rows counted and PSI per feature since the last call; starts a new window."""
        result = {name: psi(self.reference[name].fractions, self.counts[name]) for _, name, _ in self.columns}
        rows = self.rows
        for counts in self.counts.values():
            counts[:] = 0
        self.rows = 0
        return rows, result
