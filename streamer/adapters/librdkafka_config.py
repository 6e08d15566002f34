"""librdkafka's own verdict on ``[kafka.client]``: which properties exist, which values it takes.

Why ask librdkafka: ``[kafka.client]`` passes through to every Kafka client, so a typo in it
(``"securty.protocol"``) used to surface as a 44-line ``KafkaException`` traceback in whichever command first
made a client, while ``config show`` accepted it. The property list changes with every librdkafka release;
a list of our own would be a second owner, wrong after an upgrade. So the settings loader asks the installed
library, once per process, before anything connects:

1. ``property_problem(name, value)``: librdkafka sets the one property on a throwaway configuration, followed
   by a probe property that never exists. An error naming the probe means the property and its value were
   accepted; any other error is librdkafka's own sentence about the property (``No such configuration
   property``, ``Invalid value ...``). No client is created: confluent-kafka stops at the first refused
   property, and the probe is always refused.
2. ``refusal(client, exc)``: what librdkafka checks only when it creates a client -- the TLS files are read
   (``ssl.ca.location``), the SASL mechanism is in this build, properties agree with each other -- depends on
   the machine, so it is not a check of the settings: the first client a command creates fails, and
   ``kafka_admin.new_client`` says it in one line (a missing file named).
3. ``property_names()``: the list to suggest from ("did you mean"), read from librdkafka's own table
   (``rd_kafka_conf_properties_show``, the CONFIGURATION.md of the installed build, through ctypes). Where that
   symbol cannot be reached, the check still holds; only the suggestion is missing.

Results are cached per process (``functools.cache``): the answer of a given library never changes.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka import cimpl as _cimpl

from streamer.config.redaction import REDACTED, is_secret
from streamer.config.sources import setting_name

log = logging.getLogger(__name__)

PROBE = "streamer.probe.never.a.property"
_ROW = re.compile(r"^([a-z0-9_.]+)\s+\|")
_NO_SUCH = "No such configuration property"


def _message(exc: Exception) -> str:
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    text = error.str() if hasattr(error, "str") else str(error)
    return text.removeprefix("Failed to create producer: ")


@functools.cache
def _property_problem(name: str, value: Any) -> str | None:
    try:
        Producer({name: value, PROBE: "1"})
    except (KafkaException, TypeError, ValueError) as exc:
        text = _message(exc)
        return None if PROBE in text else text
    return None  # not reached: the probe property is always refused


def property_problem(name: str, value: Any) -> str | None:
    """librdkafka's refusal of ``name = value`` (an unknown name, a value it does not take), or None."""
    try:
        return _property_problem(name, value)
    except TypeError:  # an unhashable value (a TOML array or table): not cached
        return _property_problem.__wrapped__(name, value)


def unknown_property(problem: str) -> bool:
    """Whether ``problem`` (from ``property_problem``) says that the name does not exist."""
    return problem.startswith(_NO_SUCH)


def refusal(client: Mapping[str, Any], exc: Exception) -> str:
    """librdkafka's refusal to create a client with ``client`` (``[kafka.client]``) as one line: a ``*.location``
    file that does not exist is named; a secret's value never appears."""
    text = _message(exc)
    for key, value in client.items():
        if is_secret(key) and str(value):
            text = text.replace(str(value), REDACTED)
    missing = [
        (key, value)
        for key, value in client.items()
        if key.endswith(".location") and value != "probe" and not Path(str(value)).exists()
    ]
    if missing:
        key, value = missing[0]
        return f"{setting_name('kafka', 'client', key)}: {value} does not exist on this machine (librdkafka: {text})"
    return f"kafka.client: librdkafka refuses to create a client: {text}"


@functools.cache
def property_names() -> tuple[str, ...]:
    """Every property name of the installed librdkafka (global and topic level), or () where it can't tell."""
    try:
        library = ctypes.CDLL(_cimpl.__file__)  # dlsym on it also searches its dependency, librdkafka
        show = library.rd_kafka_conf_properties_show
        libc = ctypes.CDLL(None)
    except (OSError, AttributeError) as exc:
        log.debug("cannot read librdkafka's property table (%s): no suggestions for [kafka.client]", exc)
        return ()
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    show.argtypes = [ctypes.c_void_p]
    handle, path = tempfile.mkstemp(prefix="streamer-librdkafka-", suffix=".md")
    os.close(handle)
    try:
        stream = libc.fopen(path.encode(), b"w")
        if not stream:
            return ()
        show(stream)
        libc.fclose(stream)
        with open(path, encoding="utf-8", errors="replace") as table:
            names = [m[1] for line in table if (m := _ROW.match(line))]
    finally:
        os.unlink(path)
    return tuple(dict.fromkeys(names))
