"""Model cards written, not typed: the TOML text of a card (contract: the model repository) from values.

``card_text`` writes the serving contract (``name`` ... ``[outputs]``), the model card proper (``[card]``: the
prose given by the user and the figures the import measured, with the data they were measured on) and the
training distribution per feature (``[reference]``, for drift). The text is parsed back by ``core.cards``
before anything is published, so a card this module writes is one the worker accepts.

``reference_table`` is also what ``scripts/train_fraud_model.py`` writes into the shipped cards (decile bins of
each training column, edges to 6 significant digits): the shipped cards are rebuilt from it byte for byte.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core.drift import reference_of

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
REFERENCE_HEADER = "[reference]  # training distribution per feature (decile bins), for drift (PSI)"


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """A TOML value: strings, booleans, numbers (nan and inf spelled as TOML does), arrays, inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return "nan"
        if math.isinf(number):
            return "inf" if number > 0 else "-inf"
        return repr(number)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def reference_table(features: Sequence[str], x: np.ndarray) -> str:
    """The ``[reference]`` table: decile bins of each column of ``x`` (rows x features, in card order)."""
    lines = ["", REFERENCE_HEADER]
    for column, name in enumerate(features):
        ref = reference_of(x[:, column])
        edges = ", ".join(f"{e:.6g}" for e in ref.edges)
        fractions = ", ".join(f"{f:.6f}" for f in ref.fractions)
        lines.append(f"{toml_key(name)} = {{ edges = [{edges}], fractions = [{fractions}] }}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class CardSpec:
    """Everything a card says. ``card`` is the ``[card]`` table in the order it is written; ``reference`` the
    text of a ``[reference]`` table (``reference_table``) or empty."""

    name: str
    version: int
    task: str
    features: tuple[str, ...]
    input: str
    sha256: str
    score: str
    label: str | None
    threshold: float = 0.5
    allow_missing: bool = False
    card: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ""


def card_text(spec: CardSpec) -> str:
    lines = [
        f"name = {toml_value(spec.name)}",
        f"version = {spec.version}",
        f"task = {toml_value(spec.task)}",
        f"features = {toml_value(list(spec.features))}",
        f"input = {toml_value(spec.input)}",
        f"sha256 = {toml_value(spec.sha256)}",
    ]
    if spec.task == "binary-classification":
        lines.append(f"threshold = {toml_value(float(spec.threshold))}")
    if spec.allow_missing:
        lines.append("allow_missing = true")
    lines += ["", "[outputs]", f"score = {toml_value(spec.score)}"]
    if spec.label is not None:
        lines.append(f"label = {toml_value(spec.label)}")
    if spec.card:
        lines += ["", "[card]"]
        lines += [f"{toml_key(key)} = {toml_value(value)}" for key, value in spec.card.items() if value is not None]
    return "\n".join(lines) + "\n" + spec.reference
