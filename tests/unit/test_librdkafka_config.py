"""``[kafka.client]`` judged by the installed librdkafka at load (``adapters.librdkafka_config``,
``config.loading``): unknown properties and refused values are one line, with "did you mean", no secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer

from streamer import config
from streamer.adapters import librdkafka_config
from streamer.core.errors import ConfigError


def test_librdkafka_names_its_own_properties() -> None:
    names = librdkafka_config.property_names()
    assert {"security.protocol", "sasl.mechanism", "ssl.ca.location", "acks", "isolation.level"} <= set(names)


def test_a_property_is_judged_alone() -> None:
    assert librdkafka_config.property_problem("security.protocol", "SASL_SSL") is None
    assert librdkafka_config.property_problem("linger.ms", 5) is None
    assert librdkafka_config.property_problem("isolation.level", "read_committed") is None  # a consumer's
    unknown = librdkafka_config.property_problem("securty.protocol", "SSL")
    assert unknown is not None and librdkafka_config.unknown_property(unknown)
    refused = librdkafka_config.property_problem("security.protocol", "SSLL")
    assert refused is not None and not librdkafka_config.unknown_property(refused) and "SSLL" in refused


def load(tmp_path: Path, table: str) -> config.Settings:
    (tmp_path / "s.toml").write_text(f"[kafka.client]\n{table}\n")
    return config.load(tmp_path / "s.toml", environ={})


def test_a_misspelt_property_stops_loading_with_the_one_meant(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, '"securty.protocol" = "SSL"')
    assert str(raised.value) == (
        f'unknown setting kafka.client."securty.protocol" (from {tmp_path / "s.toml"}): not a librdkafka '
        "property; did you mean 'security.protocol'?"
    )


def test_a_property_unlike_any_points_at_the_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"CONFIGURATION\.md"):
        load(tmp_path, '"zzzz" = 1')


def test_a_refused_value_names_the_property_and_never_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'kafka.client."security.protocol": librdkafka refuses it: .*"SSLL"'):
        load(tmp_path, '"security.protocol" = "SSLL"')
    settings = load(tmp_path, '"security.protocol" = "SASL_SSL"\n"sasl.password" = "hunter2"')
    assert settings.kafka.client["sasl.password"] == "hunter2"


def test_what_needs_a_client_is_left_to_the_first_client(tmp_path: Path) -> None:
    # the CA file exists only where the worker runs: loading (and config show) must work anywhere
    table = '"security.protocol" = "SSL"\n"ssl.ca.location" = "/nonexistent/ca.pem"'
    client = load(tmp_path, table).kafka.client
    with pytest.raises(KafkaException) as raised:
        Producer(dict(client))
    line = librdkafka_config.refusal(client, raised.value)
    assert line.startswith('kafka.client."ssl.ca.location": /nonexistent/ca.pem does not exist on this machine')


def test_a_refusal_never_shows_a_secret() -> None:
    client = {"sasl.password": "hunter2", "sasl.mechanism": "NOPE", "security.protocol": "SASL_SSL"}
    with pytest.raises(KafkaException) as raised:
        Producer(client)
    line = librdkafka_config.refusal(client, raised.value)
    assert line.startswith("kafka.client: librdkafka refuses to create a client:") and "hunter2" not in line
