"""PSI and the served-feature counts of ``core.drift``."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamer.core.drift import FeatureCounts, FeatureReference, psi, reference_of

columns = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=20, max_size=300)


@given(columns)
def test_a_sample_against_its_own_reference_has_zero_psi(values: list[float]) -> None:
    ref = reference_of(np.array(values))
    assert ref.check() is None
    counts = FeatureCounts(["f"], {"f": ref})
    counts.add(np.array(values)[:, None])
    rows, result = counts.take()
    assert rows == len(values) and abs(result["f"]) < 1e-9


@given(columns, st.integers(0, 2**32 - 1))
def test_counts_equal_a_naive_binning_and_take_starts_a_new_window(values: list[float], seed: int) -> None:
    ref = reference_of(np.array(values), bins=5)
    sample = np.random.default_rng(seed).choice(np.array([*values, np.nan]), size=50)
    counts = FeatureCounts(["other", "f"], {"f": ref})
    counts.add(np.column_stack([np.zeros(50), sample]))
    naive = np.zeros(len(ref.edges) + 1, dtype=np.int64)
    for v in sample:
        naive[len(ref.edges) if np.isnan(v) else sum(v >= e for e in ref.edges)] += 1
    assert counts.counts["f"].tolist() == naive.tolist()
    assert set(counts.counts) == {"f"}
    counts.take()
    assert counts.rows == 0 and counts.counts["f"].sum() == 0


@given(st.lists(st.floats(0.01, 1), min_size=2, max_size=12), st.lists(st.integers(0, 1000), min_size=2, max_size=12))
def test_psi_is_non_negative_and_zero_only_for_the_same_shares(weights: list[float], observed: list[int]) -> None:
    size = min(len(weights), len(observed))
    expected = np.array(weights[:size]) / sum(weights[:size])
    value = psi(expected, observed[:size])
    assert value >= -1e-12
    assert abs(psi(expected, expected * 1000)) < 1e-9


def test_a_shifted_distribution_reads_as_a_major_shift() -> None:
    rng = np.random.default_rng(1)
    ref = reference_of(rng.normal(0, 1, 10_000))
    counts = FeatureCounts(["x"], {"x": ref})
    counts.add(rng.normal(0, 1, (5_000, 1)))
    assert counts.take()[1]["x"] < 0.02  # same distribution: stable
    counts.add(rng.normal(1.0, 1, (5_000, 1)))
    assert counts.take()[1]["x"] > 0.25  # one standard deviation off: major


def test_a_bad_reference_says_why() -> None:
    assert "edges + 1" in (FeatureReference((1.0, 2.0), (0.5, 0.5)).check() or "")
    assert "increasing" in (FeatureReference((2.0, 1.0), (0.3, 0.3, 0.4)).check() or "")
    assert "sum to 1" in (FeatureReference((1.0,), (0.3, 0.3)).check() or "")
