"""Online models in a scoring worker: shared weights in Redis, served through ONNX Runtime at bounded staleness.

At start, every loaded version whose card has ``[online]`` is registered with the Redis store: its shipped ONNX
logistic weights become the shared FTRL state unless that state already exists (another worker, or an earlier
run, learnt it). Labels then update the state in Redis (``RedisStateStore.apply_labels``, one Lua call per
batch). ``services.online_refresh.OnlineRefresher`` reloads the state every ``refresh_s`` and, when it
changed, builds the ONNX graph of the current weights (``onnx_logistic.build_logistic``) and swaps it into the
scorer -- scoring never waits for Redis, and a batch is scored entirely by one set of weights. If Redis is
unreachable the last weights keep serving; ``streamer_online_weights_age_seconds`` shows how stale they are.

``freeze`` turns the current shared weights into an ordinary model version directory (``streamer models
freeze``): same card without ``[online]``, next version number, new checksum.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from streamer.adapters.model_repository import CARD_FILE, MODEL_FILE, LoadedModel
from streamer.adapters.onnx_logistic import LogisticWeights, build_logistic, read_logistic_file
from streamer.adapters.redis_state import OnlineSpec, OnlineWeights, RedisStateStore
from streamer.core import learner
from streamer.core.cards import ModelCard

log = logging.getLogger(__name__)


@dataclass(slots=True)
class OnlineModel:
    model: LoadedModel
    spec: OnlineSpec
    updates: int = -1  # of the weights being served; -1 = the shipped ones
    refreshed: float = 0.0  # monotonic time of the last successful read

    @property
    def card(self) -> ModelCard:
        return self.model.card


def spec_of(model: LoadedModel) -> tuple[OnlineSpec, learner.FtrlState]:
    """The learner spec and starting state of an online model, from its ONNX file's logistic weights."""
    assert model.card.online is not None
    start = read_logistic_file(str(model.path))
    state = learner.from_weights(start.coef, start.bias, start.mean, start.scale, model.card.online)
    return OnlineSpec(model.card.online, state.mean, state.scale), state


def weights_of(spec: OnlineSpec, shared: OnlineWeights) -> LogisticWeights:
    w = learner.weights_from_zn(shared.z, shared.n, spec.params)
    return LogisticWeights(w[:-1], float(w[-1]), spec.mean, spec.scale)


def register(store: RedisStateStore, models: list[LoadedModel]) -> list[OnlineModel]:
    online = []
    for model in models:
        spec, state = spec_of(model)
        created = store.register_online(model.card.name, str(model.card.version), spec, state.z, state.n)
        log.info(
            "online model %s: %s shared weights", model.card.ref, "seeded the" if created else "joined the existing"
        )
        online.append(OnlineModel(model, spec, refreshed=time.monotonic()))
    return online


def freeze(store: RedisStateStore, model: LoadedModel, models_dir: Path) -> Path:
    """Write the current shared weights of an online model as the next version of the same name, not online."""
    spec, _ = spec_of(model)
    card = model.card
    shared = store.online_weights(card.name, str(card.version))
    if shared is None:
        raise LookupError(f"{card.ref} has no shared weights in Redis (no worker has served it)")
    frozen_version = max(int(p.name) for p in (models_dir / card.name).iterdir() if p.name.isdigit()) + 1
    target = models_dir / card.name / str(frozen_version)
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
    target.mkdir(parents=True)
    (target / MODEL_FILE).write_bytes(data)
    (target / CARD_FILE).write_text(text)
    return target
