"""The fault suite reuses the end-to-end fixtures: workers as subprocesses on the real embedded servers."""

from tests.e2e.conftest import engine, topics, worker_factory  # noqa: F401
