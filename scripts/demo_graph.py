"""The demo's third act: the fraud graph (``examples/graphs/fraud-graph.toml``) at work.

Account features go to Redis with ``streamer features load`` from a JSONL file the act writes: a few accounts
flagged, some with chargebacks, the rest unknown. Transactions naming ``"model": "fraud-graph"``, keyed by their
account, then go to the worker already running with ``streamer produce --file``: enrichment from Redis, the cheap
logistic model, the GBDT for the rows it is unsure of, and the business rules. The act prints what each stage
made of a few requests and the share of rows that reached the second phase.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from demo_shell import Shell, Stream
from rich.console import Console
from rich.table import Table

from streamer import synthetic  # the demo's data: the same generator as `streamer produce`


def run(
    console: Console, shell: Shell, stream: Stream, state: Path, *, count: int = 2000, accounts: int = 400
) -> dict[str, float]:
    rng = np.random.default_rng(11)
    known = [
        {
            "key": f"acct-{k:06d}",
            "features": {"chargebacks_90d": float(rng.poisson(0.4)), "flagged": float(rng.random() < 0.02)},
        }
        for k in range(accounts // 2)  # half the accounts are known to the feature store
    ]
    known[13]["features"]["flagged"] = 1.0  # one to look up below
    features_file = state / "accounts.jsonl"
    features_file.write_text("".join(json.dumps(line) + "\n" for line in known))
    flagged = sum(int(line["features"]["flagged"]) for line in known)
    console.print(f"[dim]wrote {features_file.relative_to(shell.root)}: {len(known)} accounts, {flagged} flagged[/]")
    shell.run("features", "load", "account", str(features_file.relative_to(shell.root)))
    shell.run("features", "get", "account", "acct-000013", note="what the graph's enrich stage reads")

    x = synthetic.transactions(count, seed=int(time.time()) % 10_000)
    x[::97, 0] = 2500.0  # a few amounts over the limit
    token = f"graph-{int(time.time())}"
    keys = {f"{token}-{i}": f"acct-{i % accounts:06d}" for i in range(count)}
    requests_file = state / "graph-requests.jsonl"
    requests_file.write_text(
        "".join(
            json.dumps(
                {
                    "key": keys[f"{token}-{i}"],
                    "value": {"id": f"{token}-{i}", "model": "fraud-graph", "features": synthetic.features_of(x[i])},
                }
            )
            + "\n"
            for i in range(count)
        )
    )
    console.print(f"[dim]wrote {requests_file.relative_to(shell.root)}: {count} transactions for fraud-graph[/]")
    shell.run("produce", "--file", str(requests_file.relative_to(shell.root)), "--count", "0", "--quiet")
    deadline = time.monotonic() + 60
    predictions: dict[str, dict] = {}
    while len(predictions) < count and time.monotonic() < deadline:
        predictions = {p["id"]: p for p in stream.lines if str(p.get("id", "")).startswith(token)}
        time.sleep(0.1)
    shown = Table(title="what the graph made of a few requests")
    for column in ("key", "amount", "phase", "scored by", "score", "decision", "reasons"):
        shown.add_column(column, no_wrap=column != "reasons")
    picks: list[dict] = []
    for wanted in ("deny", "review", "allow"):
        picks += [p for p in predictions.values() if p["decision"] == wanted][:3]
    for p in picks:
        i = int(p["id"].rsplit("-", 1)[1])
        shown.add_row(
            keys[p["id"]],
            f"{x[i, 0]:.0f}",
            p["outputs"]["phases.path"],
            p["outputs"]["phases.model"],
            f"{p['score']:.3f}",
            p["decision"],
            "; ".join(p["reasons"]),
        )
    console.print(shown)
    paths = Counter(p["outputs"]["phases.path"] for p in predictions.values())
    decisions = Counter(p["decision"] for p in predictions.values())
    enrichment = Counter(p["enrichment"] for p in predictions.values())
    second = paths["then"] / max(len(predictions), 1)
    console.print(
        f"{len(predictions)} of {count} answered; the GBDT (second phase) scored {second:.1%} of them; "
        f"decisions {dict(decisions)}; account features {dict(enrichment)}"
    )
    return {"answered": len(predictions), "second_phase_share": second}
