"""Seeded synthetic card transactions: the training data of the demo model and the traffic of the demo.

One hidden rule (``fraud_logit``) makes the labels, so a label stream produced here is the ground truth the
shipped ``fraud`` model was trained to approximate. Everything is a pure function of its seed, and the request
ids of a run also carry a run token (``run_token()``): the same seed gives the same traffic in every run, and
ids that differ from one run to the next, so that labels join the predictions of one run only
(``r-<seed>-<run>-<index>``; ``synthetic_labels`` gives the ground truth of the same requests).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np

from streamer.core.types import OutgoingMessage

FEATURES = ("amount", "hour", "merchant_risk", "distance_km", "velocity_1h", "account_age_days")
SEED = 7


def transactions(rows: int, seed: int = SEED) -> np.ndarray:
    """Feature matrix [rows, len(FEATURES)] in FEATURES order (float64, rounded like real data)."""
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(mean=3.6, sigma=1.1, size=rows), 2)
    hour = rng.integers(0, 24, size=rows).astype(float)
    merchant_risk = np.round(rng.beta(2.0, 6.0, size=rows), 3)
    distance_km = np.round(rng.exponential(scale=25.0, size=rows), 1)
    velocity_1h = rng.poisson(lam=1.2, size=rows).astype(float)
    account_age_days = rng.integers(1, 3650, size=rows).astype(float)
    return np.column_stack([amount, hour, merchant_risk, distance_km, velocity_1h, account_age_days])


def features_of(row: np.ndarray) -> dict[str, float]:
    """One row of ``transactions`` as a request's ``features`` object."""
    return dict(zip(FEATURES, row.tolist(), strict=True))


def fraud_logit(x: np.ndarray) -> np.ndarray:
    """The hidden rule: large amounts at night at risky merchants far from home, fast, on young accounts."""
    amount, hour, risk, distance, velocity, age = (x[:, i] for i in range(6))
    night = ((hour <= 5) | (hour >= 23)).astype(float)
    return -6.0 + 0.54 * np.log1p(amount) + 1.4 * night + 5.0 * risk + 0.012 * distance + 0.45 * velocity - 0.0007 * age


def labels(x: np.ndarray, seed: int = SEED) -> np.ndarray:
    """Fraud labels drawn from the rule's probability (0/1, int64)."""
    return labels_of(fraud_logit(x), seed)


def drifted_fraud_logit(x: np.ndarray) -> np.ndarray:
    """The rule after the demo's concept drift (account takeover): fraud moves to low-risk merchants near home,
    in fast bursts, on old accounts -- and becomes common. A model of ``fraud_logit`` gets most of it wrong."""
    risk, distance, velocity, age = (x[:, i] for i in (2, 3, 4, 5))
    return 1.0 - 8.0 * risk + 1.5 * velocity - 0.04 * distance + 0.0004 * age


def labels_of(logit: np.ndarray, seed: int = SEED) -> np.ndarray:
    """0/1 labels drawn from the probabilities of given logits."""
    rng = np.random.default_rng(seed + 1)
    return (rng.random(len(logit)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)


def run_token() -> str:
    """A short random token that makes one run's request ids unique (6 hex digits)."""
    return secrets.token_hex(3)


def request_id(seed: int, run: str, index: int) -> str:
    """The id of request ``index`` of a run: ``r-<seed>-<run>-<index>`` (``r-<seed>-<index>`` without a token)."""
    return f"r-{seed}-{run}-{index}" if run else f"r-{seed}-{index}"


def _cards(count: int, keys: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, max(keys, 1), size=count)


def synthetic_requests(
    count: int, *, keys: int = 100, model: str | None = None, seed: int = 1, run: str | None = None
) -> Iterator[OutgoingMessage]:
    """``count`` requests over ``keys`` card ids, features drawn like the demo model's training data; ``run``:
    the ids' run token (None: a fresh one, ``run_token()``; "" for none)."""
    rows = transactions(count, seed=seed)
    cards = _cards(count, keys, seed)
    token = run_token() if run is None else run
    for index in range(count):
        features = features_of(rows[index])
        body: dict[str, Any] = {"id": request_id(seed, token, index), "features": features}
        if model is not None:
            body["model"] = model
        yield OutgoingMessage(f"card-{cards[index]}".encode(), json.dumps(body).encode())


def synthetic_labels(count: int, *, keys: int = 100, seed: int = 1, run: str) -> Iterator[dict[str, Any]]:
    """The true labels of ``synthetic_requests(count, keys=keys, seed=seed, run=run)``, in the same order, as
    ``{"key", "value": {"id", "label"}}`` lines (what ``streamer label --file`` sends)."""
    truth = labels(transactions(count, seed=seed), seed=seed)
    cards = _cards(count, keys, seed)
    for index in range(count):
        value = {"id": request_id(seed, run, index), "label": int(truth[index])}
        yield {"key": f"card-{cards[index]}", "value": value}
