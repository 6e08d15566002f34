"""streamer: near-real-time ML scoring for Kafka."""

__version__ = "0.1.0"
