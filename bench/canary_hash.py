"""Cost and fairness of the canary placement: ``Split.assign`` on one batch of keys, this checkout's against the
placement of another commit (default ``main``), in one process and one run.

    .venv/bin/python bench/canary_hash.py [--before main] [--batch 1000] [--repeat 7]

The before code is ``streamer/core/routing.py`` read with ``git show REF:...`` and loaded as a module beside this
checkout's (it only imports cards and errors, which both share). Cost: the best of ``--repeat`` timings of 200
calls on one batch of sequential ids (``cust-00000``...). Fairness: the share of a 10/30/60 % canary over 1,000
and 10,000 of those ids, in binomial standard deviations from the weight.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import timeit
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from common import ROOT, record

from streamer.core import routing
from streamer.core.cards import ModelCard, OutputRef

CARD = ModelCard("fraud", 1, "binary-classification", ("a",), "x", "0" * 64, OutputRef("probabilities", 1), None)


def load_before(ref: str) -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{ref}:streamer/core/routing.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="routing-before-")) / "routing_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("routing_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["routing_before"] = module
    spec.loader.exec_module(module)
    return module


def split_of(module: ModuleType, weight: float) -> Any:  # either module's Split
    cards = {"fraud": {v: replace(CARD, version=v) for v in (1, 2)}}
    return module.Catalog(cards, serving={"fraud": module.Serving(pin=1, canary=((2, weight),))}).split("fraud")


def sigmas_off(module: ModuleType, count: int) -> list[float]:
    keys = [f"cust-{i:05d}".encode() for i in range(count)]
    off = []
    for weight in (0.1, 0.3, 0.6):
        split = split_of(module, weight)
        share = sum(split.cards[k].version == 2 for k in split.assign(keys, [""] * count)) / count
        off.append(round((share - weight) / (weight * (1 - weight) / count) ** 0.5, 2))
    return off


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    modules = {"before": load_before(args.before), "after": routing}
    keys = [f"cust-{i:05d}".encode() for i in range(args.batch)]
    ids = [""] * args.batch
    results: dict[str, dict] = {}
    print(f"{'code':8} {'us/batch':>9} {'ns/key':>7}  sigmas off at 10/30/60 % (1,000 ids | 10,000 ids)")
    for label, module in modules.items():
        split = split_of(module, 0.1)
        calls = 200
        best = min(timeit.repeat(lambda s=split: s.assign(keys, ids), number=calls, repeat=args.repeat)) / calls
        off = {n: sigmas_off(module, n) for n in (1000, 10_000)}
        results[label] = {"us_per_batch": round(best * 1e6, 1), "sigmas_off": off}
        print(f"{label:8} {best * 1e6:9.1f} {best * 1e9 / args.batch:7.0f}  {off[1000]} | {off[10_000]}")
    ratio = results["after"]["us_per_batch"] / results["before"]["us_per_batch"]
    print(f"after/before cost per batch of {args.batch}: {ratio:.2f} (shared machine; ratio from one run)")
    record("canary_hash", {"before": args.before, "batch": args.batch, **results, "cost_ratio": round(ratio, 3)})


if __name__ == "__main__":
    main()
