"""A Faust agent that relays each event to an output topic with a confluent-kafka producer, written as a user
would write it: Faust's default consumer settings (its 1,500 ms fetch wait included), ``take_events(1000,
within=0.05)``, one ``produce`` per event to the event's partition, a flush and a commit per chunk left to Faust.
The baseline the Faust engine is held against.

faust_relay.py BOOTSTRAP IN_TOPIC OUT_TOPIC COUNT   -> prints "RATE <events/s>"
"""

from __future__ import annotations

import os
import sys
import time

import faust
from confluent_kafka import Producer

bootstrap, source, target, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
app = faust.App(
    f"relay-{os.getpid()}",
    broker=f"kafka://{bootstrap}",
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    broker_rebalance_timeout=6,
    topic_allow_declare=False,
    topic_disable_leader=True,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
topic = app.topic(source, key_serializer="raw", value_serializer="raw")
producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
state = {"seen": 0, "started": None}


@app.agent(topic)
async def relay(stream: faust.StreamT) -> None:
    async for events in stream.take_events(1000, within=0.05):
        if state["started"] is None:
            state["started"] = time.monotonic()
        for event in events:
            message = event.message
            while True:
                try:
                    producer.produce(target, message.value, message.key, partition=message.partition)
                    break
                except BufferError:
                    producer.poll(0.001)
        producer.poll(0)
        state["seen"] += len(events)
        if state["seen"] >= count:
            producer.flush(30)
            print(f"RATE {count / (time.monotonic() - state['started']):.0f}", flush=True)
            os._exit(0)


@app.on_partitions_assigned.connect
async def assigned(sender: object, assigned: set, **_: object) -> None:
    state["started"] = time.monotonic()


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
