"""What a running worker writes is what the schemas say, on both engines: every prediction it produced
validates against ``schemas/prediction.schema.json`` and decodes through the envelope's declaration
(``core.outputs.Prediction``), and every dead letter's headers validate against
``schemas/dead-letter.schema.json``, for every dead-letter reason of the table.

The traffic covers each shape of the envelope: one-row JSON requests (with and without an id, by field and by
header), OIP requests of one and several rows, a graph whose rules add ``decision`` and ``reasons`` (JSON and
OIP), a graph with an enrichment (``enrichment``), a regressor without a label, and one request per dead-letter
reason -- ``scoring-failed`` from a model whose score is not finite for a negative input (a square root),
``enrichment-failed`` from that enrichment's lookup, which has no feature store here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
from onnx import TensorProto, helper

from streamer import synthetic
from streamer.adapters import devstack
from streamer.core import outputs
from streamer.core.errors import REASONS
from tests.conftest import REPO
from tests.e2e.conftest import Topics, WorkerProcess, headers_of, produce, read_all

SCHEMAS = REPO / "schemas"
FEATURES = list(synthetic.FEATURES)
RULES_GRAPH = f"""
name = "fraud-rules"
version = 1
description = "The GBDT, then a review rule on the amount and a deny rule on its score"
inputs = {json.dumps(FEATURES)}
output = "gbdt"

[stages.gbdt]
kind = "model"
model = "fraud"

[stages.decide]
kind = "rules"
mode = "first-match"
default = "allow"
default_reason = "no rule matched"

[[stages.decide.rules]]
name = "amount-limit"
when = [{{ field = "amount", op = ">", value = 2000 }}]
decision = "review"
reason = "amount over 2000"

[[stages.decide.rules]]
name = "high-score"
when = [{{ field = "gbdt", op = ">=", value = 0.5 }}]
decision = "deny"
reason = "fraud score at or above 0.5"
"""

# An enrichment without a feature store (none is configured here): a keyed row's lookup fails and is dead-lettered
# (enrichment-failed); a row without a key has no entity to read ("enrichment": "missing").
ENRICHED_GRAPH = f"""
name = "fraud-enriched"
version = 1
inputs = {json.dumps(FEATURES)}
output = "gbdt"

[stages.account]
kind = "enrich"
entity = "account"
features = {{ flagged = 0.0 }}
on_failure = "dead-letter"

[stages.gbdt]
kind = "model"
model = "fraud"
"""


def repository(tmp_path: Path) -> Path:
    """``fraud`` as shipped, the rules graph beside it, and ``root``: a regressor scoring sqrt(x)."""
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "fraud", models / "fraud")
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "fraud-rules.toml").write_text(RULES_GRAPH)
    (tmp_path / "graphs" / "fraud-enriched.toml").write_text(ENRICHED_GRAPH)
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["float_input"], ["root"])],
        "root",
        [helper.make_tensor_value_info("float_input", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("root", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    version = models / "root" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(model)
    card = 'name = "root"\nversion = 1\ntask = "regression"\nfeatures = ["x"]\ninput = "float_input"\n'
    card += f'sha256 = "{hashlib.sha256(model).hexdigest()}"\n[outputs]\nscore = "root"\n'
    (version / "card.toml").write_text(card)
    return models


def traffic() -> list[tuple[bytes | None, bytes | None, list | None]]:
    x = synthetic.transactions(8, seed=21)
    x[1, 0] = 2500.0  # over the rules' amount limit
    features = [synthetic.features_of(row) for row in x]
    oip_matrix = {"inputs": [{"name": "float_input", "shape": [3, 6], "datatype": "FP32", "data": x[:3].tolist()}]}
    oip_columns = {
        "id": "oip-graph",
        "inputs": [
            {"name": n, "shape": [2], "datatype": "FP64", "data": x[:2, i].tolist()} for i, n in enumerate(FEATURES)
        ],
    }

    def request(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    return [
        (b"k1", request(id="plain", features=features[0]), None),
        (b"k2", request(features=features[1]), None),  # no id: "<topic>:<partition>:<offset>"
        (b"k3", request(id="by-header", features=features[2]), [("streamer-model", b"fraud@1")]),
        (b"k4", request(id="oip-3", **oip_matrix), None),
        (b"k5", request(id="oip-1", inputs=[dict(oip_matrix["inputs"][0], shape=[1, 6], data=x[3].tolist())]), None),
        (b"k6", request(id="ruled-0", model="fraud-rules", features=features[0]), None),
        (b"k7", request(id="ruled-1", model="fraud-rules", features=features[1]), None),
        (b"k8", request(model="fraud-rules", **oip_columns), None),
        (b"k9", request(id="root-4", model="root", features={"x": 4.0}), None),
        (None, request(id="unkeyed", model="fraud-enriched", features=features[4]), None),
        (b"d1", b"{not json", None),  # invalid-json
        (b"d2", request(id="d2", features={"amount": 1.0}), None),  # schema: features missing
        (b"d3", request(id="d3", model="nope", features=features[0]), None),  # unknown-model
        (b"d4", request(id="d4", features=features[0], padding="x" * 5000), None),  # too-large
        (b"d5", b'{"id": "d5", "model": "root", "features": {"x": 1e999}}', None),  # non-finite
        (b"d6", request(id="d6", model="root", features={"x": -1.0}), None),  # scoring-failed: sqrt(-1)
        (b"d7", request(id="d7", model="fraud-enriched", features=features[5]), None),  # enrichment-failed
        (None, None, None),  # a tombstone: schema
    ]


def test_every_output_of_a_running_worker_validates_against_the_schemas(
    kafka_broker: devstack.ServerInfo,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    predictions_schema = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "prediction.schema.json").read_text()))
    dead_letter_schema = jsonschema.Draft202012Validator(json.loads((SCHEMAS / "dead-letter.schema.json").read_text()))
    t = topics(2)
    models = repository(tmp_path)
    env = {"STREAMER_MODELS_DIR": str(models), "STREAMER_DEFAULT_MODEL": "fraud"}
    worker = worker_factory(t, "[worker]\nmax_message_bytes = 4096\n", **env)
    worker.wait_assigned()
    sent = traffic()
    produce(kafka_broker.address, t.requests, sent)
    written = read_all(kafka_broker.address, [t.predictions, t.dlq], len(sent))
    assert len(written) == len(sent), [m.value()[:80] for m in written]

    predictions = [m for m in written if m.topic() == t.predictions]
    dead_letters = [m for m in written if m.topic() == t.dlq]
    for message in predictions:
        document = json.loads(message.value())
        predictions_schema.validate(document)
        declared = outputs.decode(message.value())  # strict: types, version pattern, required fields
        assert list(document) == [f.name for f in outputs.FIELDS if f.name in document]  # declaration order
        assert ("decision" in document) == ("reasons" in document) == (declared.model == "fraud-rules")
        assert ("enrichment" in document) == (declared.model == "fraud-enriched")
    by_id = {outputs.decode(m.value()).id: outputs.decode(m.value()) for m in predictions}
    assert {"plain", "by-header", "oip-3", "oip-1", "ruled-0", "ruled-1", "oip-graph", "root-4"} <= set(by_id)
    assert len(by_id["oip-3"].score) == 3 and len(by_id["oip-1"].score) == 1  # arrays, also for one row
    assert by_id["ruled-1"].decision == "review" and by_id["ruled-1"].reasons == ["amount over 2000"]
    assert len(by_id["oip-graph"].decision) == 2 and all(isinstance(r, list) for r in by_id["oip-graph"].reasons)
    assert by_id["root-4"].label is None and by_id["root-4"].score == 2.0
    assert by_id["unkeyed"].enrichment == "missing"
    assert any(pid.startswith(f"{t.requests}:") for pid in by_id)  # the default id

    reasons = []
    for message in dead_letters:
        found = {name: value.decode() for name, value in headers_of(message).items()}
        dead_letter_schema.validate(found)
        reasons.append(found["streamer-error"])
    assert sorted(reasons) == sorted([*REASONS, "schema"])  # every reason of the table; the tombstone a schema
    assert worker.process.poll() is None
