"""Logging set-up, one place for the CLI and for Faust's worker (which would otherwise install its own).

``STREAMER_LOG_LEVEL`` (default INFO) and ``STREAMER_LOG_JSON`` (1/true: one JSON object per line, with any
``extra`` fields such as partition, offset and model). Nothing is logged per request at INFO: requests are
counted in metrics; logs carry model loads, rebalances, recoveries and failures.
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


def level() -> str:
    wanted = os.environ.get("STREAMER_LOG_LEVEL", "INFO").upper()
    return wanted if wanted in logging.getLevelNamesMapping() else "INFO"


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
    }


def configure() -> None:
    logging.config.dictConfig(dict_config())
