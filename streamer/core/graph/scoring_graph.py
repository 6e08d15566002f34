"""The scoring graph: what runs, in which order, to turn a feature matrix into scores.

A graph is a set of named stages, each reading the outputs of the stages it depends on, run in topological
order (``graphlib``). Today's only stage kind is ``ModelStage`` (one ONNX model); the graph's ``head`` stage
says which model's outputs become ``score``/``label``/``outputs`` of the prediction, read through the card's
output references. Pipelines (a model feeding another), ensembles (several models averaged) and business
rules are further stage kinds on the same path: the worker only ever calls ``ScoringGraph.run``.

Inference is injected (``Infer``): the core never calls ONNX Runtime itself, so graphs are tested with plain
functions. Every stage's outputs must have as many rows as its input; otherwise the batch fails with
``ScoringError`` and its rows become ``scoring-failed`` dead letters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from graphlib import TopologicalSorter

import numpy as np

from streamer.core.cards import ModelCard, OutputRef
from streamer.core.errors import ScoringError

Infer = Callable[[ModelCard, np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class GraphResult:
    """Per-row results of a batch: ``score`` [rows] float64, ``label`` [rows] int64 or None, raw outputs; a
    declared graph with rules adds each row's ``decision`` and ``reasons``, one with an enrichment each row's
    ``enrichment`` (``store``, ``missing`` or ``failed``: an object array of str). The attributes are the
    per-row fields of the prediction (``core.outputs``), named and ordered alike (a test holds them equal)."""

    score: np.ndarray
    label: np.ndarray | None
    outputs: dict[str, np.ndarray]
    decision: list[str] | None = None
    reasons: list[list[str]] | None = None
    enrichment: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class ModelStage:
    name: str
    card: ModelCard
    after: tuple[str, ...] = ()

    def run(self, matrix: np.ndarray, infer: Infer) -> dict[str, np.ndarray]:
        outputs = dict(infer(self.card, matrix))
        rows = matrix.shape[0]
        for output, value in outputs.items():
            if value.shape[:1] != (rows,):
                raise ScoringError(f"{self.card.ref}: output {output!r} has shape {value.shape} for {rows} rows")
        return outputs


def read_output(outputs: Mapping[str, np.ndarray], ref: OutputRef, where: str) -> np.ndarray:
    """Apply an output reference (``name`` or ``name[:,k]``) to a stage's outputs; one value per row."""
    try:
        value = outputs[ref.name]
    except KeyError:
        raise ScoringError(f"{where}: the model returned no output {ref.name!r}") from None
    if ref.column is not None:
        return value[:, ref.column]
    if value.ndim == 2 and value.shape[1] == 1:
        return value[:, 0]
    if value.ndim != 1:
        raise ScoringError(f"{where}: output {ref.name!r} has shape {value.shape}; name a column with [:,k]")
    return value


@dataclass(frozen=True, slots=True)
class ScoringGraph:
    stages: Mapping[str, ModelStage]
    head: str

    @classmethod
    def single(cls, card: ModelCard) -> ScoringGraph:
        """The default graph: one model node."""
        return cls({card.ref: ModelStage(card.ref, card)}, card.ref)

    @property
    def card(self) -> ModelCard:
        """The card whose output references define the prediction."""
        return self.stages[self.head].card

    def run(self, matrix: np.ndarray, infer: Infer) -> GraphResult:
        if len(self.stages) == 1:
            order: Iterable[str] = self.stages
        else:
            order = TopologicalSorter({name: stage.after for name, stage in self.stages.items()}).static_order()
        results: dict[str, dict[str, np.ndarray]] = {}
        for name in order:
            results[name] = self.stages[name].run(matrix, infer)
        card = self.card
        outputs = results[self.head]
        score = read_output(outputs, card.score, card.ref).astype(np.float64, copy=False)
        label = read_output(outputs, card.label, card.ref).astype(np.int64) if card.label is not None else None
        return GraphResult(score, label, outputs)
