"""``streamer.client``: score requests through running workers and get each answer back, matched by id.

    from streamer.client import ScoringClient, DeadLetter

    with ScoringClient() as client:           # streamer.toml / STREAMER_* / `streamer dev up`, like the CLI
        prediction = client.score({"amount": 125.0, "hour": 3}, key="card-7")
        answers = client.score_many([{"amount": 1.0}, {"amount": 2.0}])   # Prediction or DeadLetter each
        # asyncio: await client.ascore(...), await client.ascore_many(...)

``score`` raises ``DeadLetter`` (reason, detail, source offset) for a request the worker dead-lettered and
``ScoreTimeout`` (a ``TimeoutError``) when no answer comes in time; ``score_many`` returns dead letters in place.
"""

from streamer.client.kafka_client import ScoringClient
from streamer.client.requests import Request
from streamer.client.results import (
    ClientClosed,
    DeadLetter,
    DeliveryFailed,
    Outcome,
    Prediction,
    ScoreTimeout,
    Source,
    UnreadableAnswer,
)

__all__ = [
    "ClientClosed",
    "DeadLetter",
    "DeliveryFailed",
    "Outcome",
    "Prediction",
    "Request",
    "ScoreTimeout",
    "ScoringClient",
    "Source",
    "UnreadableAnswer",
]
