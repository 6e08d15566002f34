"""The end-to-end fixtures (``topics``, ``worker_factory``, ``engine``...) for the fuzz corpus run through Kafka."""

from tests.e2e.conftest import *  # noqa: F403
