"""The demo's second act: concept drift, labels flowing back, the online model recovering.

Each synthetic transaction is scored twice, by the frozen ``fraud`` model (gradient-boosted trees) and by the
online ``fraud-online`` model (logistic, learning from labels in Redis). Halfway the hidden rule changes
(``synthetic.drifted_fraud_logit``). Chunk by chunk the act writes the requests to a JSONL file and sends it with
``streamer produce --file``; once both models answered (read from ``streamer consume``), it writes the true labels
to another file, sends them with ``streamer label --file`` and waits until the worker's ``/metrics`` counts them
joined, so the next chunk is scored by weights that learnt from them. A live table shows both models' accuracy
per chunk; at the end the same series is saved as a PNG with the drift marked.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
from demo_shell import Shell, Stream
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamer import synthetic  # the demo's data: the same generator as `streamer produce`, with a drift

MODELS = ("fraud", "fraud-online")


def joined_labels(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith('streamer_labels_total{outcome="joined"}'):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def bar(value: float, width: int = 12) -> str:
    filled = round(value * width)
    return "█" * filled + "·" * (width - filled)


def render(rows: list[tuple[int, str, float, float]], chunk: int) -> Table:
    table = Table(title=f"concept drift: accuracy per chunk of {chunk} transactions", expand=False)
    for column in ("scored", "rule", "frozen", "", "online", ""):
        table.add_column(column, no_wrap=True)
    for seen, rule, frozen, online in rows:
        style = "red" if rule == "drifted" else ""
        table.add_row(
            str(seen),
            f"[{style}]{rule}[/]" if style else rule,
            f"{frozen:.3f}",
            bar(frozen),
            f"{online:.3f}",
            bar(online),
        )
    return table


def write_lines(path: Path, lines: list[dict], root: Path) -> str:
    """Write JSONL; the path as a command run from the repository root names it."""
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path.relative_to(root))


def run(
    console: Console,
    shell: Shell,
    stream: Stream,
    metrics_url: str,
    state: Path,
    *,
    chunks: int = 16,
    chunk: int = 250,
) -> dict[str, list[float]]:
    drift_at = chunks // 2
    x = synthetic.transactions(chunks * chunk, seed=int(time.time()) % 10_000)
    logit = np.where(np.arange(len(x)) < drift_at * chunk, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    truth = synthetic.labels_of(logit, seed=3)
    token = f"drift{int(time.time())}"
    folder = state / "drift"
    folder.mkdir(parents=True, exist_ok=True)
    where = folder.relative_to(shell.root)
    console.print(
        f"Each chunk: {chunk} transactions for each model to [cyan]{where}/requests-NN.jsonl[/], their true labels "
        "(once both models answered) to [cyan]labels-NN.jsonl[/], each file sent with:"
    )
    shell.show(["produce", "--file", f"{where}/requests-NN.jsonl", "--count", "0", "--quiet"])
    shell.show(["label", "--file", f"{where}/labels-NN.jsonl", "--quiet"])
    accuracy: dict[str, list[float]] = {m: [] for m in MODELS}
    rows: list[tuple[int, str, float, float]] = []
    joined_before = joined_labels(metrics_url)
    mine = [line for line in stream.lines if str(line.get("id", "")).startswith(token)]
    with Live(render(rows, chunk), console=console, refresh_per_second=8) as live:
        for c in range(chunks):
            requests = [
                {
                    "key": f"card-{i % 97}",
                    "value": {"id": f"{token}-{model}-{i}", "model": model, "features": synthetic.features_of(x[i])},
                }
                for i in range(c * chunk, (c + 1) * chunk)
                for model in MODELS
            ]
            shell.run(
                "produce",
                "--file",
                write_lines(folder / f"requests-{c:02d}.jsonl", requests, shell.root),
                "--count",
                "0",
                "--quiet",
                shown=False,
                capture=True,
            )
            deadline = time.monotonic() + 60
            while len(mine) < 2 * chunk * (c + 1) and time.monotonic() < deadline:
                time.sleep(0.05)
                mine = [line for line in stream.lines if str(line.get("id", "")).startswith(token)]
            predictions = mine[2 * chunk * c :]
            for model in MODELS:
                own = [p for p in predictions if p["model"] == model]
                correct = [p["label"] == truth[int(p["id"].rsplit("-", 1)[1])] for p in own]
                accuracy[model].append(float(np.mean(correct)) if correct else float("nan"))
            rows.append(
                (
                    (c + 1) * chunk,
                    "drifted" if c >= drift_at else "original",
                    accuracy[MODELS[0]][-1],
                    accuracy[MODELS[1]][-1],
                )
            )
            live.update(render(rows, chunk))
            labels = [
                {
                    "key": f"card-{int(p['id'].rsplit('-', 1)[1]) % 97}",
                    "value": {"id": p["id"], "label": int(truth[int(p["id"].rsplit("-", 1)[1])])},
                }
                for p in predictions
            ]
            time.sleep(0.3)  # let the prediction log reach Redis before the labels do
            shell.run(
                "label",
                "--file",
                write_lines(folder / f"labels-{c:02d}.jsonl", labels, shell.root),
                "--quiet",
                shown=False,
                capture=True,
            )
            target = joined_before + 2 * chunk * (c + 1)
            deadline = time.monotonic() + 30
            while joined_labels(metrics_url) < target and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)  # > online.refresh_ms: the next chunk is scored by the updated weights
    plot(accuracy, chunk, drift_at, state / "drift.png")
    return accuracy


def plot(accuracy: dict[str, list[float]], chunk: int, drift_at: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = [(c + 1) * chunk for c in range(len(accuracy[MODELS[0]]))]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    axes.plot(seen, accuracy["fraud"], marker="o", label="frozen: fraud@1 (trees)")
    axes.plot(seen, accuracy["fraud-online"], marker="o", label="online: fraud-online@1 (FTRL, weights in Redis)")
    axes.axvline(drift_at * chunk, color="red", linestyle="--", label="the rule changes")
    axes.set_xlabel("transactions scored (labels flow back after each chunk)")
    axes.set_ylabel(f"accuracy per chunk of {chunk}")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    axes.set_title("Concept drift: the online model recovers, the frozen one does not")
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    plt.close(figure)
