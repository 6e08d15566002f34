"""The demo's second act: concept drift, labels flowing back, the online model recovering.

Each synthetic transaction is scored twice, by the frozen ``fraud`` model (gradient-boosted trees) and by the
online ``fraud-online`` model (logistic, learning from labels in Redis). Halfway the hidden rule changes
(``synthetic.drifted_fraud_logit``). After every chunk the true labels go to the feedback topic; the act waits
until the worker has joined them, so the next chunk is scored by weights that learnt from them. A live table
shows both models' accuracy per chunk; at the end the same series is saved as a PNG with the drift marked.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamer import synthetic

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
    table = Table(title=f"concept drift: rolling accuracy per chunk of {chunk} transactions", expand=False)
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


def run(
    console: Console,
    bootstrap: str,
    metrics_url: str,
    png: Path,
    *,
    requests_topic: str = "requests",
    predictions_topic: str = "predictions",
    feedback_topic: str = "feedback",
    chunks: int = 16,
    chunk: int = 250,
) -> dict[str, list[float]]:
    drift_at = chunks // 2
    x = synthetic.transactions(chunks * chunk, seed=int(time.time()) % 10_000)
    logit = np.where(np.arange(len(x)) < drift_at * chunk, synthetic.fraud_logit(x), synthetic.drifted_fraud_logit(x))
    truth = synthetic.labels_of(logit, seed=3)
    token = f"drift{int(time.time())}"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": token, "fetch.wait.max.ms": 5})
    partitions = consumer.list_topics(predictions_topic, timeout=10).topics[predictions_topic].partitions
    consumer.assign([TopicPartition(predictions_topic, p, OFFSET_BEGINNING) for p in partitions])
    accuracy: dict[str, list[float]] = {m: [] for m in MODELS}
    rows: list[tuple[int, str, float, float]] = []
    joined_before = joined_labels(metrics_url)
    with Live(render(rows, chunk), console=console, refresh_per_second=8) as live:
        for c in range(chunks):
            for i in range(c * chunk, (c + 1) * chunk):
                features = synthetic.features_of(x[i])
                for model in MODELS:
                    body = {"id": f"{token}-{model}-{i}", "model": model, "features": features}
                    producer.produce(requests_topic, json.dumps(body).encode(), f"card-{i % 97}".encode())
            producer.flush(30)
            predictions: list[dict] = []
            deadline = time.monotonic() + 60
            while len(predictions) < 2 * chunk and time.monotonic() < deadline:
                for message in consumer.consume(2000, 0.1):
                    if message.error() is None:
                        body = json.loads(message.value())
                        if str(body.get("id", "")).startswith(token):
                            predictions.append(body)
            for model in MODELS:
                mine = [p for p in predictions if p["model"] == model]
                correct = [p["label"] == truth[int(p["id"].rsplit("-", 1)[1])] for p in mine]
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
            time.sleep(0.3)  # let the prediction log reach Redis before the labels do
            for p in predictions:
                label = int(truth[int(p["id"].rsplit("-", 1)[1])])
                producer.produce(feedback_topic, json.dumps({"id": p["id"], "label": label}).encode(), b"k")
            producer.flush(30)
            target = joined_before + 2 * chunk * (c + 1)
            deadline = time.monotonic() + 30
            while joined_labels(metrics_url) < target and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.3)  # > online.refresh_ms: the next chunk is scored by the updated weights
    consumer.close()
    plot(accuracy, chunk, drift_at, png)
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
