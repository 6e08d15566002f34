"""A Faust agent that only counts events: the ceiling of any Faust-based consumer on this machine.

bare_faust_agent.py BOOTSTRAP TOPIC UNUSED COUNT   -> prints "RATE <events/s>"
"""

from __future__ import annotations

import os
import sys
import time

import faust

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from streamer.adapters.faust_consumer import FetchTuning, TunedApp

bootstrap, topic_name, _, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
wait = os.environ.get("BARE_FETCH_WAIT_MS", "5")
# the worker's fetch tuning (a fair comparison), or Faust's own defaults
tuning = {} if wait == "default" else {"fetch_tuning": FetchTuning(int(wait), read_committed=False)}
app = (TunedApp if tuning else faust.App)(
    f"bare-{os.getpid()}",
    **tuning,
    broker=f"kafka://{bootstrap}",
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    broker_rebalance_timeout=6,
    topic_allow_declare=False,
    topic_disable_leader=True,
    web_enabled=False,
    consumer_auto_offset_reset="earliest",
)
topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
state = {"seen": 0, "started": None}


@app.agent(topic)
async def counter(stream: faust.StreamT) -> None:
    async for events in stream.take_events(1000, within=float(os.environ.get("BARE_WITHIN_S", "0.001"))):
        if state["started"] is None:
            state["started"] = time.monotonic()
        state["seen"] += len(events)
        if state["seen"] >= count:
            print(f"RATE {count / (time.monotonic() - state['started']):.0f}", flush=True)
            os._exit(0)


@app.on_partitions_assigned.connect
async def assigned(sender: object, assigned: set, **_: object) -> None:
    state["started"] = time.monotonic()


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
