"""Logging set-up, one place for the CLI and for Faust's worker (which would otherwise install its own).

``STREAMER_LOG_LEVEL`` and ``STREAMER_LOG_JSON`` (1/true: one JSON object per line, with any ``extra`` fields
such as partition, offset and model). Nothing is logged per request at INFO: requests are counted in metrics;
logs carry model loads, rebalances, recoveries and failures.

The level, in order: ``STREAMER_LOG_LEVEL`` when set; else the default the caller configured (``configure``):
INFO for the long-running processes (``streamer worker``, ``streamer serve``), whose INFO lines are the
operator's record, and WARNING for every other command, which prints its answer and nothing else unless asked
(``streamer -v``: INFO, ``-vv``: DEBUG). The levels mean: INFO, what happened as it should (a model loaded, a
partition assigned, a clean stop); WARNING, what an operator should look at (a refused model, a drift, an
unreachable server being retried); a clean run logs no WARNING.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the structured fields callers pass in ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


_default = "INFO"


def level() -> str:
    """The effective level name: ``STREAMER_LOG_LEVEL`` when it names a level, else the configured default."""
    wanted = os.environ.get("STREAMER_LOG_LEVEL", "").upper()
    return wanted if wanted in logging.getLevelNamesMapping() else _default


def dict_config() -> dict[str, Any]:
    as_json = os.environ.get("STREAMER_LOG_JSON", "").lower() in ("1", "true", "yes")
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if as_json
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"streamer": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "streamer", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level(), "handlers": ["stderr"]},
        # watchfiles logs every change it sees at INFO; the model watcher logs what it does with them
        "loggers": {"watchfiles": {"level": "WARNING"}},
    }


def configure(default: str | None = None) -> None:
    """Install the handler at ``level()``; ``default`` (a level name) replaces the default level first."""
    global _default
    if default is not None:
        _default = default.upper()
    logging.config.dictConfig(dict_config())
