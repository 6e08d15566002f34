"""Secrets never printed: which settings hold one, and values (URLs included) fit to print."""

from __future__ import annotations

import re
from typing import Any

from streamer.config.sources import setting_name

# ---------------------------------------------------------------------------------------------- secrets

REDACTED = "<redacted>"
# A setting (or kafka.client key) named like this holds a secret: sasl.password, ssl.key.password,
# ssl.keystore.password, sasl.oauthbearer.client.secret, an API token, ssl.key.pem (a private key itself).
_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)|secret|token|credential|private|key\.pem|api[._-]?key|jaas|oauthbearer\.config", re.I
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_secret(name: str) -> bool:
    return _SECRET_NAME.search(name) is not None


def redact(name: str, value: Any) -> Any:
    """``value`` of setting ``name`` fit to print: a secret setting's value replaced by ``<redacted>``, the
    credentials of any URL (``scheme://user:pass@host``) too, in dicts and lists as well."""
    if value is None:
        return None
    if is_secret(name):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(setting_name(name, str(k)) if name else str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(name, v) for v in value]
    if isinstance(value, str):
        return _redact_urls(value)
    return value


def _redact_urls(text: str) -> str:
    """A URL's credentials, everything from its ``scheme://`` to the last ``@`` after it, go whole: the password
    may hold ``/``, ``,``, ``:`` or ``@``, and a token may be the user name (``https://TOKEN@host``). Over-redacting
    (a later URL of a list, an ``@`` in a path) is the price of never under-redacting."""
    scheme = _SCHEME.search(text)
    if scheme is None or "@" not in text[scheme.end() :]:
        return text
    return f"{text[: scheme.end()]}{REDACTED}@{text.rpartition('@')[2]}"
