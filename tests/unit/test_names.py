"""``core.names``: every "did you mean" of the CLI and the settings, one rule."""

from __future__ import annotations

import pytest

from streamer.core.errors import ConfigError
from streamer.core.names import MAX_LISTED, check, check_model_ref, hint, suggestion, unknown


def test_the_closest_known_name_is_suggested() -> None:
    assert suggestion("fraudd", ["fraud", "fraud-online"]) == "fraud"
    assert suggestion("securty.protocol", ["security.protocol", "sasl.mechanism"]) == "security.protocol"
    assert suggestion("zzz", ["fraud"]) is None
    assert suggestion("x", []) is None


def test_a_hint_always_gives_the_next_step() -> None:
    assert hint("fraudd", ["fraud"]) == "did you mean 'fraud'?"
    assert hint("zzz", ["b", "a"]) == "known: a, b"
    assert hint("zzz", []) == "none exist"
    assert hint("zzz", ["b", "a"], listed=False) == "none is close"
    many = [f"topic-{i:02d}" for i in range(MAX_LISTED + 3)]
    assert hint("zzz", many).endswith(f"... ({len(many)} in all)")


def test_an_unknown_name_is_one_line_with_its_place_and_what_to_do() -> None:
    error = unknown("topic", "requets", ["requests", "predictions"], then="create it with `streamer topics create`")
    assert isinstance(error, ConfigError)
    assert str(error) == (
        "no topic named 'requets' (did you mean 'requests'?); create it with `streamer topics create`"
    )
    assert str(unknown("model", "x", ["fraud"], "models")) == "no model named 'x' in models (known: fraud)"


def test_check_returns_a_known_name_and_refuses_the_rest() -> None:
    assert check("graph", "g", ["g"]) == "g"
    with pytest.raises(ConfigError, match="did you mean 'fraud-graph'"):
        check("graph", "fraud-grpah", ["fraud-graph"])


def test_a_model_reference_is_checked_by_name_then_version() -> None:
    versions = {"fraud": [1, 2], "fraud-graph": [1]}
    assert check_model_ref("fraud", versions, "models") == "fraud"
    assert check_model_ref("fraud@2", versions, "models") == "fraud@2"
    with pytest.raises(ConfigError, match=r"no model named 'fraudd' in models \(did you mean 'fraud'\?\)"):
        check_model_ref("fraudd@1", versions, "models")
    with pytest.raises(ConfigError, match=r"'fraud@9': fraud has no version '9' in models \(versions: 1, 2\)"):
        check_model_ref("fraud@9", versions, "models")
    with pytest.raises(ConfigError, match="has no version 'latest'"):
        check_model_ref("fraud@latest", versions, "models")
