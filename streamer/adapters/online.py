"""Online models in a scoring worker: shared weights in Redis, served through ONNX Runtime at bounded staleness.

Lifecycle of a version whose card has ``[online]``:

1. validation (``check_online``, called where a version is validated, at start or when it is dropped in): its
   graph must be the accepted logistic form (``adapters.onnx_logistic``) and the rebuilt graph must score like
   the shipped one, or that version alone is refused with a ``ModelError``. After it passed, ``spec_of`` and
   ``register`` never raise for it (``register`` only raises ``StateStoreError``);
2. registration (``register``, at start or later for a version loaded while the worker runs; idempotent): the
   shipped ONNX logistic weights become the shared FTRL state unless that state already exists (another worker,
   or an earlier run, learnt it), and the store learns for it from the next label batch on. Labels then update
   the state in Redis (``RedisStateStore.apply_labels``, one Lua call per batch);
3. serving: ``services.online_refresh.OnlineRefresher`` reloads the state every ``refresh_s`` and, when it
   changed, builds the ONNX graph of the current weights (``weights_of`` + ``onnx_logistic.build_logistic``, in
   the shipped graph's layout) and swaps it into the scorer -- scoring never waits for Redis, and a batch is
   scored entirely by one set of weights. If Redis is unreachable the last weights keep serving;
   ``streamer_online_weights_age_seconds`` shows how stale they are;
4. ``freeze`` turns the current shared weights into an ordinary model version directory (``streamer models
   freeze``): same card without ``[online]``, next version number, new checksum, published atomically
   (``onnx_models.publish_version``) like an imported version.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from streamer.adapters.onnx_logistic import GraphForm, LogisticWeights, build_logistic, read_logistic_file
from streamer.adapters.onnx_models import CARD_FILE, LoadedModel, next_version, publish_version, session_options
from streamer.core import learner
from streamer.core.cards import GraphSignature, ModelCard, TensorInfo, check_signature
from streamer.core.errors import ModelError
from streamer.core.state import OnlineSpec, OnlineWeights, StateStore

log = logging.getLogger(__name__)

# How far the rebuilt graph's scores may be from the shipped graph's on the validation probe: both compute in
# float32 from the same float32 attributes (the weights pass through float64 and back), so they agree to a few
# float32 ulps; a wrong layout or sign is off by far more.
_SCORE_TOLERANCE = 1e-5
_PROBE_ROWS = 64


@dataclass(frozen=True, slots=True)
class OnlineModelSpec(OnlineSpec):
    """``OnlineSpec`` (what the Lua step needs) plus the shipped graph's layout, so that a graph rebuilt from
    learnt weights has the shipped graph's output names, order and coefficient rows."""

    form: GraphForm | None = None


@dataclass(slots=True)
class OnlineModel:
    model: LoadedModel
    spec: OnlineSpec
    updates: int = -1  # of the weights being served; -1 = the shipped ones
    adaptations: int = 0  # concept-drift adaptations of the weights being served
    refreshed: float = 0.0  # monotonic time of the last successful read

    @property
    def card(self) -> ModelCard:
        return self.model.card


def spec_of(model: LoadedModel) -> tuple[OnlineModelSpec, learner.FtrlState]:
    """The learner spec and starting state of an online model, from its ONNX file's logistic weights.

    Raises ``ModelError`` (naming the file) for a card without ``[online]``, a graph not of the accepted form or
    invalid parameters -- never for a model that passed ``check_online``."""
    params = model.card.online
    where = str(model.path)
    if params is None:
        raise ModelError(where, f"{model.card.ref} is not an online model (its card has no [online])")
    start = read_logistic_file(where)
    try:
        state = learner.from_weights(start.coef, start.bias, start.mean, start.scale, params)
    except ValueError as exc:  # invalid parameters (the card parser refuses them first)
        raise ModelError(where, str(exc)) from None
    if start.coef.shape != (len(model.card.features),):
        features = len(model.card.features)
        raise ModelError(where, f"the graph has {start.coef.size} weights, the card {features} features")
    return OnlineModelSpec(params, state.mean, state.scale, start.form), state


def weights_of(spec: OnlineSpec, shared: OnlineWeights) -> LogisticWeights:
    """The logistic weights of a shared FTRL state, in the shipped graph's layout when ``spec`` carries it."""
    w = learner.weights_from_zn(shared.z, shared.n, spec.params)
    form = spec.form if isinstance(spec, OnlineModelSpec) else None
    return LogisticWeights(w[:-1], float(w[-1]), spec.mean, spec.scale, form)


def _signature(session: ort.InferenceSession) -> GraphSignature:
    def info(node: ort.NodeArg) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else None for d in (node.shape or ()))
        return TensorInfo(node.name, shape, node.type.removeprefix("tensor(").removesuffix(")"))

    return GraphSignature(tuple(info(n) for n in session.get_inputs()), tuple(info(n) for n in session.get_outputs()))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_online(model: LoadedModel) -> None:
    """Refuse (``ModelError(path, one-line reason)``) an ``[online]`` version the learner cannot take over.

    Call it where a version is validated (after ``model_repository.load_version``), so that such a version
    alone is refused and the others keep serving. No-op for a card without ``[online]``. Checks, in order: the
    parameters (``FtrlParams.problem``), the graph's form (``onnx_logistic.read_logistic``), the starting state
    (finite), and that the graph ``build_logistic`` rebuilds from the starting state reads to the card exactly as
    the shipped one -- same output names in the same order, the card's signature check, and the same scores and
    labels on a probe of rows around the standardisation mean. Pure CPU (no Redis), a few milliseconds.
    """
    card = model.card
    if card.online is None:
        return
    where = str(model.path)
    problem = card.online.problem()
    if problem is not None:
        raise ModelError(where, problem)
    spec, state = spec_of(model)
    if not (np.all(np.isfinite(state.z)) and np.all(np.isfinite(learner.weights(state)))):
        raise ModelError(where, "the starting FTRL state of these weights and [online] parameters is not finite")
    try:
        data = build_logistic(card, weights_of(spec, OnlineWeights(state.z, state.n, 0)))
        rebuilt = ort.InferenceSession(data, sess_options=session_options(1), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnx.checker's and ONNX Runtime's errors: names the card gives collide, say
        raise ModelError(where, f"cannot rebuild the logistic graph from its weights: {_first_line(exc)}") from None
    names = tuple(o.name for o in rebuilt.get_outputs())
    if names != tuple(model.output_names):
        raise ModelError(where, f"the rebuilt logistic graph's outputs {names} differ from {tuple(model.output_names)}")
    check_signature(card, _signature(rebuilt), where)
    rng = np.random.default_rng(0)
    probe = (spec.mean + spec.scale * rng.normal(0.0, 2.0, (_PROBE_ROWS, len(spec.mean)))).astype(np.float32)
    try:
        expected = dict(zip(names, model.session.run(None, {card.input: probe}), strict=True))
        got = dict(zip(names, rebuilt.run(None, {card.input: probe}), strict=True))
    except Exception as exc:  # ONNX Runtime's own error types, e.g. a graph with a fixed batch size
        raise ModelError(
            where, f"cannot score {_PROBE_ROWS} probe rows to compare with the rebuilt graph: {_first_line(exc)}"
        ) from None
    decided = np.abs(learner.predict_proba_many(state, probe) - 0.5) > 1e-4  # labels compared off the ties
    for name in names:
        shipped, served = np.asarray(expected[name]), np.asarray(got[name])
        if shipped.shape != served.shape:
            raise ModelError(where, f"the rebuilt graph's {name} has shape {served.shape}, the shipped {shipped.shape}")
        if shipped.dtype.kind == "f":
            same = np.allclose(served, shipped, rtol=1e-4, atol=_SCORE_TOLERANCE)
        else:
            same = np.array_equal(served[decided], shipped[decided])
        if not same:
            raise ModelError(where, f"the rebuilt logistic graph does not reproduce the shipped {name}")


def register(store: StateStore, models: list[LoadedModel]) -> list[OnlineModel]:
    """Learn for ``models`` (online versions that passed ``check_online``) through ``store`` from now on.

    Per model, one script call seeds the shared state with the shipped weights unless it exists (init if absent),
    and ``store.online`` gains the model's spec: the next ``apply_labels`` learns for it. Idempotent and safe at
    any time, from any thread: at start for every online version, and later for one version loaded while the
    worker runs (the same call; ``store.online`` only grows, so the ``LEARNED + k`` codes of earlier models keep
    their meaning). Raises only ``StateStoreError`` (Redis unreachable); calling it again once Redis answers seeds
    what was not seeded. Returns one ``OnlineModel`` per model, to hand to the refresher.
    """
    online = []
    for model in models:
        spec, state = spec_of(model)
        name, version = model.card.name, str(model.card.version)
        created = store.register_online(name, version, spec, state.z, state.n)
        if not created:
            shared = store.online_weights(name, version)
            if shared is not None and shared.z.shape != state.z.shape:
                log.error(
                    "online model %s: the shared state in Redis has %s weights, the model %s: not learning (delete "
                    "%s:online:%s:%s or serve a new version)",
                    model.card.ref,
                    shared.z.size,
                    state.z.size,
                    store.prefix,
                    name,
                    version,
                )
        log.info(
            "online model %s: %s shared weights", model.card.ref, "seeded the" if created else "joined the existing"
        )
        online.append(OnlineModel(model, spec, refreshed=time.monotonic()))
    return online


def with_weights(model: LoadedModel, spec: OnlineSpec, shared: OnlineWeights, threads: int) -> LoadedModel:
    """``model`` serving the shared weights ``shared``: the logistic graph rebuilt from them (the shipped graph's
    layout) in a new ONNX Runtime session, or ``ModelError`` naming the file when that graph cannot be served."""
    try:
        data = build_logistic(model.card, weights_of(spec, shared))
        session = ort.InferenceSession(data, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # build_logistic's ValueError, onnx.checker's and ONNX Runtime's own errors
        raise ModelError(str(model.path), f"cannot serve the learnt weights: {_first_line(exc)}") from None
    return LoadedModel(model.card, model.path, session, model.output_names)


def freeze(store: StateStore, model: LoadedModel, models_dir: Path) -> Path:
    """Write the current shared weights of an online model as the next version of the same name, not online."""
    spec, _ = spec_of(model)
    card = model.card
    shared = store.online_weights(card.name, str(card.version))
    if shared is None:
        raise LookupError(f"{card.ref} has no shared weights in Redis (no worker has served it)")
    frozen_version = next_version(models_dir, card.name)
    data = build_logistic(card, weights_of(spec, shared))
    text = (model.path.parent / CARD_FILE).read_text()
    text = re.sub(r"(?m)^version = \d+$", f"version = {frozen_version}", text, count=1)
    text = re.sub(r'(?m)^sha256 = "[0-9a-f]+"$', f'sha256 = "{hashlib.sha256(data).hexdigest()}"', text, count=1)
    text = re.sub(r"(?ms)^\[online\]\n.*?(?=^\[|\Z)", "", text)  # the frozen version serves, it does not learn
    text = text.replace(
        "[card]\n",
        f'[card]\nfrozen_from = "{card.ref} after {shared.updates} online updates"\n',
        1,
    )
    return publish_version(models_dir, card.name, frozen_version, data, text)
