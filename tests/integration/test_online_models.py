"""Which graphs an ``[online]`` card may sit on, against real ONNX Runtime (and the real redis-server where the
state is shared): the accepted forms are read, rebuilt in their own layout and learnt; anything else is refused
by ``online.check_online`` with one line naming the file, before the worker would serve it."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from streamer.adapters import devstack, model_repository, online, onnx_models
from streamer.adapters.onnx_logistic import build_logistic, read_logistic, read_logistic_file
from streamer.adapters.redis_state import LEARNED, LoggedPrediction, RedisStateStore
from streamer.core import learner
from streamer.core.cards import parse_card
from streamer.core.errors import ModelError
from tests.conftest import REPO

FEATURES = ["a", "b", "c"]
W, B = np.array([0.8, -1.5, 0.3]), -0.4
MEAN, SCALE = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 4.0])
ML = "ai.onnx.ml"


def logistic_graph(
    *,
    rows: int = 1,
    outputs: tuple[str, ...] = ("output_probability", "output_label"),
    classifier: dict[str, object] | None = None,
    scaler: dict[str, object] | None = None,
    extra: list[onnx.NodeProto] | None = None,
    classifier_input: str = "scaled",
) -> bytes:
    """A Scaler + binary LinearClassifier graph as exporters other than skl2onnx write it: by default one
    coefficient row ``w`` and one intercept, outputs ``output_label``/``output_probability`` listed
    probabilities first. Keyword tables override node attributes."""
    coefficients = list(W) if rows == 1 else [*(-W), *W]
    attrs: dict[str, object] = {
        "classlabels_ints": [0, 1],
        "coefficients": [float(c) for c in coefficients],
        "intercepts": [B] if rows == 1 else [-B, B],
        "post_transform": "LOGISTIC",
    }
    attrs.update(classifier or {})
    attrs = {k: v for k, v in attrs.items() if v is not None}  # None: leave the attribute out
    scaler_attrs: dict[str, object] = {"offset": [float(v) for v in MEAN], "scale": [float(v) for v in 1 / SCALE]}
    scaler_attrs.update(scaler or {})
    nodes = [
        helper.make_node("Scaler", ["x"], ["scaled"], domain=ML, **scaler_attrs),
        helper.make_node(
            "LinearClassifier", [classifier_input], ["output_label", "output_probability"], domain=ML, **attrs
        ),
        *(extra or []),
    ]
    label_type = TensorProto.STRING if "classlabels_strings" in attrs else TensorProto.INT64
    declared = {
        "output_label": helper.make_tensor_value_info("output_label", label_type, [None]),
        "output_probability": helper.make_tensor_value_info("output_probability", TensorProto.FLOAT, [None, 2]),
        "extra": helper.make_tensor_value_info("extra", TensorProto.FLOAT, [None, 2]),
    }
    graph = helper.make_graph(
        nodes,
        "exported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, len(FEATURES)])],
        [declared[name] for name in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ML, 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_version(
    models_dir: Path,
    data: bytes,
    *,
    version: int = 1,
    online_table: str = 'learner = "ftrl"\nalpha = 0.2\nl1 = 0.1',
    outputs: str = 'score = "output_probability[:,1]"\nlabel = "output_label"',
) -> Path:
    target = models_dir / "exported" / str(version)
    target.mkdir(parents=True)
    (target / onnx_models.MODEL_FILE).write_bytes(data)
    (target / onnx_models.CARD_FILE).write_text(
        f'name = "exported"\nversion = {version}\ntask = "binary-classification"\nfeatures = {FEATURES!r}\n'
        f'input = "x"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n\n[outputs]\n{outputs}\n\n'
        f'[online]\n{online_table}\n\n[card]\ndescription = "test"\n'.replace("'", '"')
    )
    return target


def intercepts_of(node: onnx.NodeProto) -> list[float]:
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == "intercepts")


def probe(n: int = 200, seed: int = 0) -> np.ndarray:
    return (MEAN + SCALE * np.random.default_rng(seed).normal(0, 1.5, (n, len(FEATURES)))).astype(np.float32)


def expected_p(x: np.ndarray, w: np.ndarray = W, b: float = B) -> np.ndarray:
    return 1 / (1 + np.exp(-(((x - MEAN) / SCALE) @ w + b)))


def test_a_single_row_linear_classifier_is_read_checked_and_rebuilt_in_its_own_layout(tmp_path: Path) -> None:
    model = model_repository.load_version(write_version(tmp_path, logistic_graph()))
    x = probe()
    p, label = model.session.run(None, {"x": x})  # probabilities first, as this graph lists them
    np.testing.assert_allclose(p[:, 1], expected_p(x), atol=1e-6)
    online.check_online(model)
    weights = read_logistic_file(str(model.path))
    np.testing.assert_allclose(weights.coef, W, rtol=1e-6)
    np.testing.assert_allclose([weights.bias, *weights.mean, *weights.scale], [B, *MEAN, *SCALE], rtol=1e-6)
    assert weights.form is not None and (weights.form.rows, weights.form.outputs) == (
        1,
        ("output_probability", "output_label"),
    )
    rebuilt = onnx.load_from_string(build_logistic(model.card, weights))
    assert [o.name for o in rebuilt.graph.output] == list(model.output_names)
    [classifier] = [n for n in rebuilt.graph.node if n.op_type == "LinearClassifier"]
    assert len(intercepts_of(classifier)) == 1  # still one coefficient row
    session = model_repository.ort.InferenceSession(rebuilt.SerializeToString())
    got_p, got_label = session.run(None, {"x": x})
    np.testing.assert_allclose(got_p, p, atol=1e-6)
    assert np.array_equal(got_label, label)


def test_the_two_row_form_and_a_broadcast_scaler_are_accepted(tmp_path: Path) -> None:
    one_mean = logistic_graph(
        rows=2, scaler={"offset": [0.5], "scale": [2.0]}, outputs=("output_label", "output_probability")
    )
    model = model_repository.load_version(write_version(tmp_path, one_mean))
    online.check_online(model)
    weights = read_logistic_file(str(model.path))
    np.testing.assert_allclose(weights.mean, [0.5] * 3)
    np.testing.assert_allclose(weights.scale, [0.5] * 3)
    assert weights.form is not None and weights.form.rows == 2


@pytest.mark.parametrize(
    ("graph", "reason"),
    [
        (lambda: logistic_graph(classifier={"post_transform": "NONE"}), "not a binary logistic model"),
        (
            lambda: logistic_graph(classifier={"classlabels_ints": [1, 2]}),
            "not a binary logistic model (LOGISTIC, classes [0, 1])",
        ),
        (
            lambda: logistic_graph(classifier={"classlabels_ints": None, "classlabels_strings": ["no", "yes"]}),
            "classes [0, 1]",
        ),
        (
            lambda: logistic_graph(
                classifier={"intercepts": [0.0, B, -B], "coefficients": [0.0] * 9, "classlabels_ints": [0, 1, 2]}
            ),
            "classes [0, 1]",
        ),
        (
            lambda: logistic_graph(rows=2, classifier={"coefficients": [*W, *W]}),
            "class rows are not -w and w",
        ),
        (lambda: logistic_graph(scaler={"scale": [1.0, 0.0, 1.0]}), "scales finite and positive"),
        (lambda: logistic_graph(classifier_input="x"), "the Scaler must read the graph's input and feed"),
        (
            lambda: logistic_graph(
                extra=[helper.make_node("Identity", ["output_probability"], ["extra"])],
                outputs=("output_label", "output_probability", "extra"),
            ),
            "must be [Scaler +] LinearClassifier, found Scaler, LinearClassifier, Identity",
        ),
    ],
)
def test_a_graph_not_of_the_accepted_form_is_refused_in_one_line_naming_the_file(
    tmp_path: Path, graph: object, reason: str
) -> None:
    # the card reads the score only: what it would read as a label is not what this test is about
    version = write_version(tmp_path, graph(), outputs='score = "output_probability[:,1]"')  # type: ignore[operator]
    with pytest.raises(ModelError) as refused:  # by the loader, if it runs check_online itself, or right after
        online.check_online(model_repository.load_version(version))
    assert refused.value.path == str(version / "model.onnx") and reason in refused.value.detail
    assert "\n" not in str(refused.value)


def test_a_scaler_of_another_width_is_refused_by_the_reader() -> None:
    """(ONNX Runtime itself refuses such a graph when it first runs it.)"""
    graph = onnx.load_from_string(logistic_graph(scaler={"offset": [0.0, 0.0], "scale": [1.0, 1.0]}))
    with pytest.raises(ModelError, match="the Scaler's offset has 2 values for 3 features"):
        read_logistic(graph, "model.onnx")


def test_the_tree_model_with_an_online_card_is_refused_and_plain_versions_pass() -> None:
    trees = model_repository.load_version(REPO / "models" / "fraud" / "1")
    online.check_online(trees)  # no [online]: nothing to check
    as_online = dataclasses.replace(trees, card=dataclasses.replace(trees.card, online=learner.FtrlParams()))
    with pytest.raises(ModelError, match="an online model must be \\[Scaler \\+\\] LinearClassifier, found"):
        online.check_online(as_online)
    with pytest.raises(ModelError, match="must be \\[Scaler \\+\\] LinearClassifier"):
        online.spec_of(as_online)
    shipped = model_repository.load_version(REPO / "examples" / "models" / "fraud-online" / "1")
    for l1 in (0.0, 0.5, 10.0):
        online.check_online(
            dataclasses.replace(
                shipped, card=dataclasses.replace(shipped.card, online=learner.FtrlParams(0.3, 1.0, l1, 1.0))
            )
        )


def test_online_card_parameters_l1_accepted_and_a_degenerate_learner_refused() -> None:
    table = {
        "name": "m",
        "version": 1,
        "task": "binary-classification",
        "features": FEATURES,
        "input": "x",
        "sha256": "0" * 64,
        "outputs": {"score": "p[:,1]"},
    }
    card = parse_card({**table, "online": {"learner": "ftrl", "l1": 0.7}}, "card.toml")
    assert card.online == learner.FtrlParams(alpha=0.1, beta=1.0, l1=0.7, l2=1.0)  # the documented defaults
    assert card.on_drift == "restart" and card.concept_drift.kind == "adwin"
    with pytest.raises(ModelError, match=r"online\.beta and online\.l2 cannot both be 0"):
        parse_card({**table, "online": {"learner": "ftrl", "beta": 0, "l2": 0}}, "card.toml")
    with pytest.raises(ModelError, match=r"online\.l1 must be a finite non-negative number"):
        parse_card({**table, "online": {"learner": "ftrl", "l1": float("inf")}}, "card.toml")


def test_a_single_row_online_version_registers_learns_in_redis_and_freezes_in_its_form(
    redis_server: devstack.ServerInfo, tmp_path: Path
) -> None:
    models_dir = tmp_path / "models"
    model = model_repository.load_version(write_version(models_dir, logistic_graph()))
    online.check_online(model)
    store = RedisStateStore.from_url(redis_server.address, prefix=f"t{uuid.uuid4().hex[:8]}")
    [registered] = online.register(store, [model])
    spec, start = online.spec_of(model)
    x = probe(400, seed=3)
    y = (np.random.default_rng(3).random(400) < 1 - expected_p(x)).astype(int)  # the opposite rule
    store.log_predictions(
        [LoggedPrediction(f"s-{i}", "exported", "1", 0.5, 0.5, 1.0, row.tolist()) for i, row in enumerate(x)]
    )
    codes = store.apply_labels([(f"s-{i}", int(v), f"feedback:0:{i}") for i, v in enumerate(y)], 5.0)
    assert codes == [LEARNED] * 400
    reference = learner.learn_many(start, x, y)
    shared = store.online_weights("exported", "1")
    assert shared is not None and shared.updates == 400
    np.testing.assert_allclose(shared.z, reference.z, atol=1e-9)
    served = model_repository.ort.InferenceSession(
        build_logistic(model.card, online.weights_of(registered.spec, shared))
    )
    names = [o.name for o in served.get_outputs()]
    assert names == list(model.output_names)  # what the refresher swaps in reads like the shipped graph
    got = dict(zip(names, served.run(None, {"x": x}), strict=True))
    np.testing.assert_allclose(got["output_probability"][:, 1], learner.predict_proba_many(reference, x), atol=1e-5)

    frozen = model_repository.load_version(online.freeze(store, model, models_dir))
    assert frozen.card.ref == "exported@2" and frozen.card.online is None
    assert frozen.output_names == model.output_names
    [classifier] = [n for n in onnx.load(str(frozen.path)).graph.node if n.op_type == "LinearClassifier"]
    assert len(intercepts_of(classifier)) == 1
    assert spec.form is not None and spec.form.rows == 1
