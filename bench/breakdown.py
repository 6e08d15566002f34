"""Where the time goes per event, per engine: py-spy samples of a worker draining a backlog, by stage.

    .venv/bin/python bench/breakdown.py [--engine batch] [--count 200000] [--seconds 8]

Samples every thread of the worker (py-spy, no idle frames) while it drains pre-loaded requests, assigns each
sample to the first stage found in its stack (most specific first), and turns the shares into microseconds per
event using the drain rate measured in the same run. CPU time of all threads is counted, so the stages add up
to more than the wall time per event when threads overlap.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import count_until, embedded_stack, fresh_topics, preload, record, start_worker, wait_for_log

# (stage, frame-name fragments); the first stage whose fragment appears in a sample's stack wins. Fragments of
# the code before and after the columnar rewrite are both listed, so that one script profiles either checkout
# (``--worker-code``).
STAGES = [
    ("decode (msgspec)", ("decode_request",)),
    ("features (matrix)", ("build_matrix",)),
    ("score (ONNX Runtime)", ("Session.run",)),
    (
        "encode (prediction JSON)",
        ("encode_body", "encode_single_predictions", "_predictions", "open_bodies", "finish_predictions"),
    ),
    ("scoring bookkeeping (routing, summaries)", ("score_records", "score_batch", "_summarise", "_route")),
    (
        "produce + delivery reports",
        ("OutputProducer.send", "_serve_callbacks", "_delivery_report", "KafkaOutputSink", "output_records"),
    ),
    ("acknowledge + commit", ("_release_acks", "_on_delivered", "_commit", "Message.ack", "Consumer.commit")),
    (
        "reorder + emit bookkeeping",
        ("ScoringPipeline._emit", "ScoringPipeline._scored", "reorder.py", "ledger.py", "ScoringPipeline._send"),
    ),
    (
        "batching + hand-over",
        (
            "ScoringPipeline.add",
            "ScoringPipeline._run_timer",
            "_run_dispatcher",
            "ScoringPipeline._submit",
            "BatchConsumeLoop._call",
        ),
    ),
    (
        "consume (Kafka client, Faust machinery)",
        ("_convert", "records_of", "BatchConsumeLoop._run", "(faust/", "(aiokafka/", "(mode/"),
    ),
    ("metrics, prediction log", ("on_outcomes", "on_batch", "metrics.py", "prediction_log", "redis_state")),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="batch")
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--worker-code", default=None, help="Run the worker from this checkout (PYTHONPATH).")
    parser.add_argument("--redis", action="store_true", help="Configure Redis (the prediction log runs).")
    args = parser.parse_args()
    profile = Path(tempfile.mkdtemp()) / "profile.txt"
    with embedded_stack() as state:
        bootstrap = state.kafka_bootstrap
        topics = fresh_topics(bootstrap, 8, "requests", "predictions", "feedback", "dlq")
        preload(bootstrap, topics["requests"], args.count)
        env = {"STREAMER_ENGINE": args.engine, "STREAMER_LOG_LEVEL": "INFO"}
        if args.worker_code:
            env["PYTHONPATH"] = args.worker_code
        if args.redis:
            env["STREAMER_REDIS_URL"] = state.redis_url
        worker, log_path = start_worker(bootstrap, topics, profile.parent / "worker", **env)
        wait_for_log(log_path, r"assigned partitions \[", worker)
        started = time.monotonic()
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(worker.pid),
                "-d",
                str(int(args.seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seen, last = count_until(bootstrap, [topics["predictions"], topics["dlq"]], args.count, timeout_s=900)
        rate = seen / ((last or time.monotonic()) - started)
        spy.wait(60)
        worker.terminate()
        worker.wait(60)
    samples: Counter[str] = Counter()
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        leaf = stack.rsplit(";", 1)[-1]
        # Waiting, not working: selectors, condition waits, idle pool threads, and the producer's poll thread
        # blocked in librdkafka (its leaf is the poll call itself; delivery callbacks show as deeper frames).
        if any(idle in leaf for idle in ("select (", "wait (threading", "_worker (concurrent", "_serve_callbacks")):
            continue
        total += int(count)
        stage = next((name for name, parts in STAGES if any(p in stack for p in parts)), "other (runtime, loop)")
        samples[stage] += int(count)
    per_event_us = 1e6 / rate
    print(f"\nengine {args.engine}: {rate:,.0f} events/s = {per_event_us:.1f} µs per event (wall)")
    print(f"raw profile (py-spy, one stack per line): {profile}\n")
    busy = total / (args.seconds * 200)  # cores kept busy by this process
    shares = {}
    for stage, count in samples.most_common():
        share = count / total
        shares[stage] = round(share, 3)
        print(f"{stage:42} {share * 100:5.1f} %  {share * busy * per_event_us:6.1f} µs CPU per event")
    record(
        "breakdown",
        {
            "engine": args.engine,
            "code": args.worker_code,
            "redis": args.redis,
            "rate": round(rate),
            "cores_busy": round(busy, 2),
            "shares": shares,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
