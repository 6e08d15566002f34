"""A raw relay, consume -> produce with no scoring: the floor of a two-hop Kafka round trip here.

relay.py BOOTSTRAP IN_TOPIC OUT_TOPIC     (runs until killed; prints READY once assigned)
"""

from __future__ import annotations

import sys
import uuid

from confluent_kafka import Consumer, Producer

bootstrap, source, target = sys.argv[1], sys.argv[2], sys.argv[3]
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": f"relay-{uuid.uuid4().hex[:6]}",
        "auto.offset.reset": "latest",
        "enable.auto.commit": True,
        "fetch.wait.max.ms": 5,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }
)
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
consumer.subscribe([source], on_assign=lambda c, p: print("READY", flush=True))
while True:
    for message in consumer.consume(num_messages=1000, timeout=0.005):
        if message.error() is None:
            producer.produce(target, message.value(), message.key(), partition=message.partition())
    producer.poll(0)
