"""The error tree (``core.errors``) pinned: one tree, every class with its policy, nothing unused, all documented."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from streamer.core import errors
from streamer.core.errors import DEAD_LETTER_REASONS, FatalError, StreamerError

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "streamer"
ERRORS_FILE = PACKAGE / "core" / "errors.py"
# The client library (``streamer.client``) is used by other programs: its results (a dead letter, a delivery that
# failed) are exceptions of its own API, subclasses of ``StreamerError`` that inherit the policy attributes.
CLIENT = PACKAGE / "client"

CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, StreamerError)]

# One instance of each class, as its raisers build it.
SAMPLES: dict[type[StreamerError], StreamerError] = {
    errors.DecodeError: errors.DecodeError(errors.SCHEMA, "field 'features' is missing"),
    errors.ModelError: errors.ModelError("models/fraud/1/model.onnx", "checksum mismatch"),
    errors.ScoringError: errors.ScoringError("fraud@1: output 'label' has shape (2,) for 3 rows"),
}


def sample(cls: type[StreamerError]) -> StreamerError:
    return SAMPLES.get(cls) or cls(f"a {cls.__name__}")


def test_the_tree_has_one_root_and_lives_in_one_module() -> None:
    assert {c.__module__ for c in CLASSES} == {"streamer.core.errors"}
    names = {c.__name__ for c in CLASSES}
    elsewhere = []
    for path in PACKAGE.rglob("*.py"):
        if path == ERRORS_FILE or CLIENT in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", None) for b in node.bases}
                if bases & names:
                    elsewhere.append(f"{path.relative_to(REPO)}:{node.name}")
    assert elsewhere == [], "every StreamerError is defined in streamer/core/errors.py"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_class_carries_the_policy_attributes(cls: type[StreamerError]) -> None:
    error = sample(cls)
    assert error.reason is None or error.reason in DEAD_LETTER_REASONS
    assert isinstance(error.retriable, bool)
    assert error.topic is None and error.partition is None and error.offset is None
    if issubclass(cls, FatalError):
        assert isinstance(error.exit_code, int) and error.exit_code > 0 and not error.retriable
    else:
        assert error.exit_code is None
    assert str(error) and "\n" not in str(error)
    assert (cls.__doc__ or "").strip(), f"{cls.__name__} says what it means"


def test_the_policy_of_each_kind() -> None:
    decode = sample(errors.DecodeError)
    assert decode.reason == errors.SCHEMA and not decode.retriable
    assert sample(errors.ScoringError).reason == errors.SCORING_FAILED
    assert not sample(errors.ScoringError).retriable
    assert sample(errors.StateStoreError).retriable and sample(errors.BrokerError).retriable
    assert not errors.StateStoreError("refused", retriable=False).retriable
    located = errors.OutputError("cannot deliver", topic="predictions", partition=3, offset=41)
    assert (located.topic, located.partition, located.offset, located.exit_code) == ("predictions", 3, 41, 3)
    assert errors.Stalled("stuck", partition=2).partition == 2
    with pytest.raises(ValueError):
        errors.DecodeError("not-a-reason", "...")


def test_exit_codes_are_distinct_and_documented() -> None:
    fatal = [c for c in CLASSES if issubclass(c, FatalError) and c is not FatalError]
    codes = [c.exit_code for c in fatal]
    assert len(set(codes)) == len(codes) and 2 not in codes  # 2: an operator error, any other StreamerError
    contract = (REPO / "docs" / "contract.md").read_text()
    table = contract[contract.index("\n## Exit codes\n") :]  # the table the README links to
    for code in codes:
        assert re.search(rf"^\| {code} \|", table, re.MULTILINE), f"exit code {code} is not in docs/contract.md's table"


def test_every_dead_letter_reason_is_documented() -> None:
    docs = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    text = "\n".join(path.read_text() for path in docs if path.exists())
    assert {
        errors.INVALID_JSON,
        errors.SCHEMA,
        errors.UNKNOWN_MODEL,
        errors.TOO_LARGE,
        errors.NON_FINITE,
        errors.SCORING_FAILED,
        errors.ENRICHMENT_FAILED,
    } == DEAD_LETTER_REASONS
    missing = sorted(r for r in DEAD_LETTER_REASONS if f"`{r}`" not in text)
    assert missing == [], f"dead-letter reasons not documented in README.md or docs/: {missing}"


def test_nothing_in_the_module_is_unused() -> None:
    """Every class and constant of ``core.errors`` is used by the package outside the module itself."""
    public = [
        n
        for n, v in vars(errors).items()
        if not n.startswith("_")
        and getattr(v, "__module__", None) in ("streamer.core.errors", None)
        and (inspect.isclass(v) or n.isupper())
    ]
    others = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p != ERRORS_FILE)
    unused = [name for name in public if not re.search(rf"\b{name}\b", others)]
    assert unused == []
