"""Online learning in Redis: labels joined + evaluated + learnt per second, round trips, and the two ways of
updating shared weights -- one Lua call per batch vs per-feature HINCRBYFLOAT deltas -- for speed and for
correctness under two concurrent workers.

    .venv/bin/python bench/online.py [--labels 20000] [--batch 1000]

Rows:
- ``lua, 1 worker``: ``RedisStateStore.apply_labels`` with the online model registered (join, evaluation and
  FTRL step in one script run per batch); and without it (join + evaluation only), to isolate learning.
- ``deltas, 1 worker``: read z/n (HMGET), run the same FTRL batch locally (``core.learner``), write the changes
  back as pipelined HINCRBYFLOAT per coordinate: two round trips per batch, learning only.
- Correctness: two threads (own connections) split the labels; the relative distance of the final weights
  to one worker's sequential result on the same labels, for both methods, and the update count.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from common import embedded_stack, record

from streamer import synthetic
from streamer.adapters import model_repository, online, onnx_models
from streamer.adapters.redis_state import LoggedPrediction, RedisStateStore
from streamer.core import learner

ONLINE_DIR = Path(__file__).resolve().parent.parent / "examples" / "models" / "fraud-online" / "1"


def make_store(url: str, model: onnx_models.LoadedModel, with_online: bool) -> RedisStateStore:
    store = RedisStateStore.from_url(url, prefix=f"b{uuid.uuid4().hex[:8]}")
    if with_online:
        spec, start = online.spec_of(model)
        store.register_online("fraud-online", "1", spec, start.z, start.n)
    return store


def log(store: RedisStateStore, x: np.ndarray) -> None:
    entries = [
        LoggedPrediction(f"p{i}", "fraud-online", "1", 0.5, 0.5, time.time(), row.tolist())
        for i, row in enumerate(x.astype(np.float32))
    ]
    for b in range(0, len(entries), 5000):
        store.log_predictions(entries[b : b + 5000])


def lua_rate(store: RedisStateStore, labels: list[tuple[str, int]], batch: int) -> float:
    started = time.perf_counter()
    for b in range(0, len(labels), batch):
        store.apply_labels(labels[b : b + batch], time.time())
    return len(labels) / (time.perf_counter() - started)


def deltas_learn(
    client: redis.Redis, key: str, spec: online.OnlineSpec, start: learner.FtrlState, x: np.ndarray, y: np.ndarray
) -> None:
    """One batch by the delta method: read, learn locally, add the differences (2 round trips)."""
    d = len(start.mean) + 1
    values = client.hmget(key, [f"z{k}" for k in range(1, d + 1)] + [f"n{k}" for k in range(1, d + 1)])
    z, n = np.array(values[:d], dtype=float), np.array(values[d:], dtype=float)
    state = learner.learn_many(learner.FtrlState(z, n, start.mean, start.scale, spec.params), x, y)
    pipe = client.pipeline(transaction=False)
    for k in range(d):
        pipe.hincrbyfloat(key, f"z{k + 1}", float(state.z[k] - z[k]))
        pipe.hincrbyfloat(key, f"n{k + 1}", float(state.n[k] - n[k]))
    pipe.hincrby(key, "updates", len(y))
    pipe.execute()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    model = model_repository.load_version(ONLINE_DIR)
    spec, start = online.spec_of(model)
    x = synthetic.transactions(args.labels, seed=99)
    y = synthetic.labels(x, seed=99)
    labels = [(f"p{i}", int(v)) for i, v in enumerate(y)]
    results: dict[str, float] = {}
    with embedded_stack() as state:
        url = state.redis_url
        stores = {}
        for with_online, name in ((True, "lua join+eval+learn"), (False, "lua join+eval (no learning)")):
            stores[with_online] = store = make_store(url, model, with_online)
            log(store, x)
            results[f"{name}, labels/s"] = lua_rate(store, labels, args.batch)

        client = redis.Redis.from_url(url)
        store = make_store(url, model, True)
        key = f"{store.prefix}:online:fraud-online:1"
        started = time.perf_counter()
        for b in range(0, args.labels, args.batch):
            deltas_learn(client, key, spec, start, x[b : b + args.batch], y[b : b + args.batch])
        results["deltas learn only, labels/s"] = args.labels / (time.perf_counter() - started)

        reference = learner.learn_many(start, x.astype(np.float32), y)
        w_ref = learner.weights(reference)

        def report(name: str, store: RedisStateStore) -> None:
            """Updates in the shared weights, and their relative distance to core.learner's single run."""
            shared = store.online_weights("fraud-online", "1")
            assert shared is not None
            w = learner.weights_from_zn(shared.z, shared.n, spec.params)
            results[f"{name}: updates"] = shared.updates
            results[f"{name}: weight distance to 1 worker"] = float(np.linalg.norm(w - w_ref) / np.linalg.norm(w_ref))

        def concurrently(*targets: Callable[[], object]) -> None:
            threads = [threading.Thread(target=target) for target in targets]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        report("lua 1 worker (vs core.learner)", stores[True])

        # two concurrent workers, each its own connection, labels split alternately by batch
        lua_store = make_store(url, model, True)
        log(lua_store, x)
        twin = RedisStateStore.from_url(url, prefix=lua_store.prefix)
        twin.online = dict(lua_store.online)
        batches = [labels[b : b + args.batch] for b in range(0, args.labels, args.batch)]
        concurrently(
            *(
                lambda s=s, k=k: [s.apply_labels(p, time.time()) for p in batches[k::2]]
                for k, s in enumerate((lua_store, twin))
            )
        )
        report("lua 2 workers", lua_store)

        delta_store = make_store(url, model, True)
        key = f"{delta_store.prefix}:online:fraud-online:1"
        spans = list(range(0, args.labels, args.batch))

        def delta_worker(part: list[int]) -> None:
            own = redis.Redis.from_url(url)
            for b in part:
                deltas_learn(own, key, spec, start, x[b : b + args.batch], y[b : b + args.batch])

        concurrently(*(lambda k=k: delta_worker(spans[k::2]) for k in range(2)))
        report("deltas 2 workers", delta_store)
    print(f"\n{args.labels} labels, batches of {args.batch} (one Lua call = 1 round trip per batch)\n")
    for name, value in results.items():
        print(f"{name:56} {value:12,.4f}" if value < 10 else f"{name:56} {value:12,.0f}")
    record("online", {"labels": args.labels, "batch": args.batch, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
