"""Any valid value of any setting, written in the config file or in its variable, is what ``load`` returns.

The values are drawn from each field's declared type and bounds (``msgspec.inspect``), so a setting added to
``streamer/config.py`` is covered without touching this file; the few whose validity depends on other settings
are drawn by hand or left to the table-driven tests in test_config.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer import config

TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
INT64 = (-(2**63), 2**63 - 1)
VARIABLES = {".".join(target): variable for variable, target in config.ENVIRONMENT.items()}
DEFAULT_TOPICS = set(config.TopicSettings().all())
TOPIC_FIELDS = config.TopicSettings.__struct_fields__


def values_of(info: mi.Type) -> st.SearchStrategy[Any]:
    """Every value msgspec accepts for the type (None aside: a file cannot say it, an empty variable does)."""
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else info.gt + 1 if info.gt is not None else INT64[0]
        high = info.le if info.le is not None else info.lt - 1 if info.lt is not None else INT64[1]
        return st.integers(low, high)
    if isinstance(info, mi.FloatType):
        return st.floats(
            min_value=info.ge if info.ge is not None else info.gt,
            max_value=info.le if info.le is not None else info.lt,
            exclude_min=info.gt is not None,
            exclude_max=info.lt is not None,
            allow_nan=False,
        )
    if isinstance(info, mi.BoolType):
        return st.booleans()
    if isinstance(info, mi.StrType):
        return TEXT
    if isinstance(info, mi.LiteralType):
        return st.sampled_from(sorted(info.values))
    if isinstance(info, mi.UnionType):
        (member,) = [t for t in info.types if not isinstance(t, mi.NoneType)]
        return values_of(member).filter(lambda v: v != "")  # an empty variable unsets an optional setting
    if isinstance(info, mi.DictType):
        return st.dictionaries(TEXT, values_of(info.value_type), max_size=3)
    if isinstance(info, mi.AnyType):
        return st.one_of(TEXT, st.integers(*INT64), st.booleans())
    raise AssertionError(f"no strategy for {info}: add one")


# Valid only together with other settings: drawn by hand here, or tested in test_config.py.
BY_HAND = {
    **{f"topics.{t}": TEXT.filter(lambda v: v != "" and v not in DEFAULT_TOPICS) for t in TOPIC_FIELDS},
    "evaluation.windows": st.sampled_from(["5m", "30s,5m", "5m,1h,24h", "1m,5m,7d"]),
    # librdkafka properties that take any text: the loader asks librdkafka about every key (unknown ones refused)
    "kafka.client": st.dictionaries(
        st.sampled_from(["client.id", "sasl.username", "sasl.password", "ssl.key.password"]), TEXT, max_size=3
    ),
}
# kafka.sasl_password is also written into kafka.client (test_config.py)
ELSEWHERE = {"evaluation.floor_window", "models.dir", "models.canary", "kafka.transactional", "kafka.sasl_password"}
STRATEGIES = {
    name: BY_HAND[name] if name in BY_HAND else values_of(mi.type_info(hint))
    for name, hint in config.FIELD_TYPES.items()
    if name not in ELSEWHERE
}


def as_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):  # a JSON string is a TOML basic string, but for DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{as_toml(str(k))} = {as_toml(v)}" for k, v in value.items()) + "}"


def as_variable(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value) if isinstance(value, dict) else str(value)


def test_every_setting_is_drawn_here_or_tested_elsewhere() -> None:
    assert set(STRATEGIES) | ELSEWHERE == set(config.FIELD_TYPES)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the file is rewritten per example
@given(data=st.data())
def test_any_valid_value_round_trips_through_the_file_and_the_environment(tmp_path: Path, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(STRATEGIES)), label="setting")
    value = data.draw(STRATEGIES[name], label="value")
    section, key = name.split(".")
    path = tmp_path / "s.toml"
    environ = {} if name == "dev.state_dir" else {"STREAMER_STATE_DIR": str(tmp_path)}  # no dev stack here

    path.write_text(f"[{section}]\n{key} = {as_toml(value)}\n")
    loaded, sources = config.load_with_sources(path, environ)
    assert getattr(getattr(loaded, section), key) == value
    assert sources[name] == config.Source("file", str(path))

    if name in VARIABLES:  # the variable wins over another value in the file
        path.write_text(f"[{section}]\n{key} = {as_toml(data.draw(STRATEGIES[name], label='in the file'))}\n")
        loaded, sources = config.load_with_sources(path, environ | {VARIABLES[name]: as_variable(value)})
        assert getattr(getattr(loaded, section), key) == value
        assert sources[name] == config.Source("environment", VARIABLES[name])
