"""model_import.card_writer: the TOML it writes parses back, as the worker's card parser reads it."""

from __future__ import annotations

import math
import tomllib

import numpy as np

from streamer.core.cards import parse_card
from streamer.model_import.card_writer import CardSpec, card_text, reference_table, toml_value


def test_values_round_trip_through_tomllib() -> None:
    values = {
        "text": 'quotes " and \\ backslash, a newline\nand ünïcode 😀',
        "numbers": [1, -2.5, 1e-07, 3.0],
        "inline": {"auc": 0.91, "forced": True, "with space": "x"},
    }
    text = "\n".join(f"{key} = {toml_value(value)}" for key, value in values.items())
    assert tomllib.loads(text) == values
    assert math.isnan(tomllib.loads(f"x = {toml_value(float('nan'))}")["x"])
    assert tomllib.loads(f"x = {toml_value(np.float32(0.5))}")["x"] == 0.5


def test_a_written_card_is_one_the_worker_accepts() -> None:
    rng = np.random.default_rng(0)
    features = ("amount", "hour of day")  # a name that must be quoted as a key
    spec = CardSpec(
        name="m",
        version=3,
        task="binary-classification",
        features=features,
        input="float_input",
        sha256="ab" * 32,
        score="probabilities[:,1]",
        label="label",
        threshold=0.3,
        allow_missing=True,
        card={"description": "d", "metrics": {"auc": 0.9, "rows": 10}},
        reference=reference_table(features, rng.normal(size=(500, 2))),
    )
    card = parse_card(tomllib.loads(card_text(spec)), "card.toml")
    assert (card.ref, card.features, card.threshold, card.allow_missing) == ("m@3", features, 0.3, True)
    assert card.card["metrics"] == {"auc": 0.9, "rows": 10} and set(card.reference) == set(features)
    assert str(card.score) == "probabilities[:,1]" and str(card.label) == "label"
