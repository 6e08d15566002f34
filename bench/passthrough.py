"""A plain confluent-kafka consume -> produce -> commit loop: the ceiling of a Python relay here.

passthrough.py BOOTSTRAP IN_TOPIC OUT_TOPIC COUNT   -> prints "RATE <messages/s>"
"""

from __future__ import annotations

import sys
import time
import uuid

from confluent_kafka import Consumer, Producer

bootstrap, source, target, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": f"pass-{uuid.uuid4().hex[:6]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 5,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }
)
producer = Producer(
    {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "enable.idempotence": True,
        "queue.buffering.max.messages": 1_000_000,
    }
)
started: list[float] = []
consumer.subscribe([source], on_assign=lambda c, p: started.append(time.monotonic()))
seen = 0
while seen < count:
    messages = consumer.consume(num_messages=1000, timeout=0.1)
    for message in messages:
        if message.error():
            continue
        while True:
            try:
                producer.produce(target, message.value(), message.key(), partition=message.partition())
                break
            except BufferError:
                producer.poll(0.001)
        seen += 1
    producer.poll(0)
    if messages:
        producer.flush()
        consumer.commit(asynchronous=True)
print(f"RATE {count / (time.monotonic() - started[0]):.0f}", flush=True)
consumer.close()
