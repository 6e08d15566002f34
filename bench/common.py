"""Shared pieces of the benchmarks: an embedded stack, fresh topics, preloading, counting, results files.

Benchmarks measure; they never assert. Each prints a table and appends one JSON line per run to
``bench/results/<name>.jsonl`` with the machine and the commit, so figures in notes can be traced to a run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.adapters import devstack  # noqa: E402
from streamer.adapters.kafka_admin import KafkaAdmin  # noqa: E402
from streamer.synthetic import synthetic_requests  # noqa: E402


@contextmanager
def embedded_stack() -> Iterator[devstack.DevState]:
    """A broker and redis-server of their own for this run, stopped afterwards."""
    state_dir = Path(tempfile.mkdtemp(prefix="streamer-bench-"))
    state, _ = devstack.up(state_dir)
    try:
        yield state
    finally:
        devstack.down(state_dir)


def fresh_topics(bootstrap: str, partitions: int, *names: str) -> dict[str, str]:
    token = uuid.uuid4().hex[:6]
    topics = {name: f"bench-{name}-{token}" for name in names}
    KafkaAdmin(bootstrap).create_topics(topics.values(), partitions)
    return topics


KEYS = 2000  # entity keys of the requests, over 8 partitions: what users run
WORKER_TOPICS = ("requests", "predictions", "feedback", "dlq", "model_events", "shadow")


def worker_topics(bootstrap: str, partitions: int) -> dict[str, str]:
    """Fresh names for every topic a worker reads or writes (the requests' partition count for each)."""
    return fresh_topics(bootstrap, partitions, *WORKER_TOPICS)


def load(bootstrap: str, topic: str, count: int, rate: float = 0.0, seed: int = 1) -> subprocess.Popen[str]:
    """The load generator, a process of its own (``load.py``: linger 5 ms, idempotent, acks=all, 2,000 keys)."""
    options = ["--rate", str(rate), "--keys", str(KEYS), "--seed", str(seed)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "load.py"), bootstrap, topic, str(count), *options],
        stdout=subprocess.PIPE,
        text=True,
    )


def preload_as_clients(bootstrap: str, topic: str, count: int) -> float:
    """Pre-load ``count`` requests through ``load.py`` as fast as it sends them; returns its rate."""
    process = load(bootstrap, topic, count)
    out, _ = process.communicate(timeout=900)
    if process.returncode != 0 or not out.startswith("SENT"):
        raise SystemExit(f"load.py failed: {out[-2000:]}")
    return count / float(out.split()[2])


def user_worker(
    bootstrap: str,
    topics: dict[str, str],
    workdir: Path,
    engine: str,
    redis_url: str | None,
    code: str | None = None,
    **env: str,
) -> tuple[subprocess.Popen, Path]:
    """``streamer worker`` through its CLI, as users run it: Redis configured when ``redis_url`` (then every
    background service runs: the prediction log, the label consumer, online refresh of the online model loaded
    beside ``fraud``, the control channel, concept drift), models watched, the topic watch and the watchdog on.
    ``code``: run it from that checkout."""
    settings = {
        "STREAMER_ENGINE": engine,
        **(
            {"STREAMER_MODELS_DIR": str(online_models(workdir)), "STREAMER_DEFAULT_MODEL": "fraud"} if redis_url else {}
        ),
        "STREAMER_LOG_LEVEL": "INFO",
        "STREAMER_MODEL_EVENTS_TOPIC": topics["model_events"],
        "STREAMER_SHADOW_TOPIC": topics["shadow"],
        **({"STREAMER_REDIS_URL": redis_url} if redis_url else {}),
        **({"PYTHONPATH": code} if code else {}),
        **env,
    }
    return start_worker(bootstrap, topics, workdir, **settings)


def online_models(workdir: Path) -> Path:
    """The shipped ``fraud`` model and the online ``fraud-online`` beside it (so that online refresh runs)."""
    models = workdir / "online-models"
    if not models.exists():
        shutil.copytree(ROOT / "models" / "fraud", models / "fraud")
        shutil.copytree(ROOT / "examples" / "models" / "fraud-online", models / "fraud-online")
    return models


def preload(bootstrap: str, topic: str, count: int, keys: int = 1000) -> float:
    """Produce ``count`` synthetic requests as fast as possible; returns the rate."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 2_000_000,
        }
    )
    started = time.monotonic()
    for message in synthetic_requests(count, keys=keys, seed=42):
        while True:
            try:
                producer.produce(topic, message.value, message.key)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(60)
    return count / (time.monotonic() - started)


def count_until(bootstrap: str, topics: list[str], expected: int, timeout_s: float) -> tuple[int, float | None]:
    """Read the topics from the beginning until ``expected`` messages; returns (count, time of the last one)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-counter",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            "isolation.level": "read_committed",
        }
    )
    assignment = []
    for topic in topics:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    consumer.assign(assignment)
    seen, last = 0, None
    deadline = time.monotonic() + timeout_s
    while seen < expected and time.monotonic() < deadline:
        messages = consumer.consume(num_messages=10_000, timeout=0.2)
        good = sum(1 for m in messages if m.error() is None)
        if good:
            seen += good
            last = time.monotonic()
    consumer.close()
    return seen, last


def start_worker(bootstrap: str, topics: dict[str, str], workdir: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        "STREAMER_KAFKA_BOOTSTRAP": bootstrap,
        "STREAMER_MODELS_DIR": str(ROOT / "models"),
        "STREAMER_METRICS_PORT": "0",
        "STREAMER_STATE_DIR": str(workdir / "state"),
        "STREAMER_REQUESTS_TOPIC": topics["requests"],
        "STREAMER_PREDICTIONS_TOPIC": topics["predictions"],
        "STREAMER_FEEDBACK_TOPIC": topics["feedback"],
        "STREAMER_DLQ_TOPIC": topics["dlq"],
        "STREAMER_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
        "STREAMER_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),  # this checkout, not whatever the environment's editable install points at
        **env,
    }
    log_path = workdir / "worker.log"
    process = devstack.start_worker(workdir, log_path, settings)
    return process, log_path


def wait_for_log(log_path: Path, pattern: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if re.search(pattern, log_path.read_text(errors="replace")):
            return
        if process.poll() is not None:
            raise SystemExit(f"process exited: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)
    raise SystemExit(f"timeout waiting for {pattern!r} in {log_path}")


def record(name: str, results: dict) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "commit": commit,
        "dirty": bool(
            subprocess.run(["git", "status", "--porcelain", "--", "streamer"], cwd=ROOT, capture_output=True).stdout
        ),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "host": platform.node(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "command": " ".join(["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]]),
        **results,
    }
    if "--before-code" in sys.argv[:-1]:  # before/after in one run: which code the ``before:`` rows ran
        before = sys.argv[sys.argv.index("--before-code") + 1]
        line["before_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=before, capture_output=True, text=True
        ).stdout.strip()
    path = ROOT / "bench" / "results" / f"{name}.jsonl"
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as file:
        file.write(json.dumps(line) + "\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def batch_stats(log_path: Path) -> dict[str, float]:
    """From a running worker's /metrics (found in its log): mean rows per batch, mean batch wait (ms), and per stage
    of the data path (``streamer_stage_latency_seconds``) and for the event loop's lag, the mean and the p99 (ms;
    the p99 is the upper bound of the bucket it falls in)."""
    import urllib.request

    match = re.search(r"metrics: (http://\S+/metrics)", log_path.read_text(errors="replace"))
    if match is None:
        return {}
    with urllib.request.urlopen(match.group(1), timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}  # series -> (upper bound, cumulative count)
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in (
            "streamer_batch_size_messages_sum",
            "streamer_batch_size_messages_count",
            "streamer_batch_wait_seconds_sum",
        ):
            values[name] = float(value)
        series = re.match(
            r"(?:streamer_stage_latency_seconds|streamer_event_loop_lag_seconds)_(bucket|sum|count)\{?(.*?)\}?$", name
        )
        if series is None:
            continue
        kind, labels = series.groups()
        stage = re.search(r'stage="([^"]+)"', labels)
        key = stage.group(1) if stage else "loop_lag"
        if kind == "bucket":
            bound = re.search(r'le="([^"]+)"', labels)
            assert bound is not None
            buckets.setdefault(key, []).append((float(bound.group(1)), float(value)))
        else:
            values[f"{key}_{kind}"] = float(value)
    count = values.get("streamer_batch_size_messages_count", 0.0)
    if not count:
        return {}
    stats = {
        "mean_batch_rows": round(values["streamer_batch_size_messages_sum"] / count, 1),
        "mean_batch_wait_ms": round(1000 * values["streamer_batch_wait_seconds_sum"] / count, 2),
    }
    for key, cumulative in buckets.items():
        total = values.get(f"{key}_count", 0.0)
        if not total:
            continue
        stats[f"{key}_mean_ms"] = round(1000 * values[f"{key}_sum"] / total, 2)
        p99 = next(bound for bound, seen in sorted(cumulative) if seen >= 0.99 * total)
        stats[f"{key}_p99_ms"] = round(1000 * p99, 2) if p99 != float("inf") else float("inf")
    return stats


def row_config(options: list[str]) -> str:
    """The streamer.toml of a row's options."""
    kafka = [o[len("kafka.") :] for o in options if o.startswith("kafka.")]
    if "tx" in options:
        kafka.append("transactional = true")
    worker = [f"scoring_threads = {o.split('=')[1]}" for o in options if o.startswith("threads=")]
    text = "[kafka]\n" + "\n".join(kafka) + "\n" if kafka else ""
    return text + ("[worker]\n" + "\n".join(worker) + "\n" if worker else "")
