"""The JSON Schemas of the output envelopes in ``schemas/``, generated from their one declaration each.

- ``prediction.schema.json``: from ``core.outputs.Prediction`` (msgspec's schema of the struct: every field,
  its type and description, in declaration order), with ``latency_ms`` required as it is on the topic.
- ``dead-letter.schema.json``: from the header names of ``core.headers`` and the reason table
  ``core.errors.REASONS`` (the enum of ``streamer-error``).

``tests/unit/test_schemas_agree.py`` fails when a file differs from what this module generates; to regenerate
after changing a declaration::

    .venv/bin/python -m tests.wire_schemas
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from streamer.core import headers, outputs
from streamer.core.errors import REASONS

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _one_line(node: Any) -> Any:
    """Descriptions on one line (a docstring wraps)."""
    if isinstance(node, dict):
        return {k: " ".join(v.split()) if k == "description" else _one_line(v) for k, v in node.items()}
    return [_one_line(item) for item in node] if isinstance(node, list) else node


def prediction_schema() -> dict[str, Any]:
    generated = _one_line(msgspec.json.schema(outputs.Prediction))
    definitions = generated["$defs"]
    body = definitions.pop("Prediction")
    body.pop("title", None)
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": "https://streamer.dev/schemas/prediction.schema.json",
        "title": "streamer prediction (contract section 3)",
        "description": body.pop("description"),
        **body,
        "required": [f.name for f in outputs.FIELDS if f.required or f.topic],
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


def dead_letter_schema() -> dict[str, Any]:
    digits = {"type": "string", "pattern": "^[0-9]+$"}
    properties = {
        headers.ERROR_HEADER: {"enum": list(REASONS)},
        headers.ERROR_DETAIL_HEADER: {"type": "string", "minLength": 1},
        headers.SOURCE_TOPIC: {"type": "string", "minLength": 1},
        headers.SOURCE_PARTITION: digits,
        headers.SOURCE_OFFSET: digits,
    }
    return {
        "$schema": DRAFT,
        "$id": "https://streamer.dev/schemas/dead-letter.schema.json",
        "title": "streamer dead letter headers (contract section 5)",
        "description": "A dead letter's key and value are the original request's, byte for byte; what went wrong "
        "travels in these headers (shown here as an object of header name to UTF-8 value).",
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }


GENERATED = {"prediction": prediction_schema, "dead-letter": dead_letter_schema}


def text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name, generate in GENERATED.items():
        path = SCHEMAS / f"{name}.schema.json"
        path.write_text(text(generate()))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
