"""SIGTERM at random moments of a worker's start, on a loaded machine: always exit 0, within a bound.

Found from outside: a worker stopped while it imported onnxruntime exited 1 (``ImportError: initialization
failed``, the handler's exception raised inside the C extension's initialisation), one stopped while Faust
assigned its partitions crashed (``InvalidStateError``, "We experienced a crash!"), and one stopped in its first
seconds died by the signal (-15) before any handler was installed. Here every moment of the start is a clean stop.

Each stop lands at a random moment, log-spaced over the start (denser early, where imports are), with two CPU
burners beside the workers. Short form (``make test``): a few moments over the first 6 s, both engines. Long form
(``STREAMER_CHAOS_LONG=1``): 20 moments per engine, over the start as measured on this machine (the time to the
first assignment of one worker, under the same load), so that the late steps (model loading, Faust's partition
assignment) are reached too; where each stop landed is printed.
"""

from __future__ import annotations

import math
import random
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.chaos.test_faults import LONG
from tests.e2e.conftest import Topics, WorkerProcess

EXIT_BOUND_S = 60.0  # from the signal to the exit: one step of the start (an import on a loaded machine) and the drain
SHORT_WINDOW_S = 6.0


@pytest.fixture
def cpu_burners() -> Iterator[None]:
    """Two busy processes beside the workers (the machine has two cores): a loaded machine."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(10)


def log_spaced_moments(count: int, first_s: float, last_s: float, rng: random.Random) -> list[float]:
    """``count`` moments, one drawn log-uniformly within each of ``count`` log-spaced bins of [first_s, last_s]."""
    edges = [math.log(first_s) + (math.log(last_s) - math.log(first_s)) * i / count for i in range(count + 1)]
    return [math.exp(rng.uniform(edges[i], edges[i + 1])) for i in range(count)]


def where_stopped(log: str) -> str:
    """The step the stop landed in, as the worker's log tells it."""
    found = re.search(r"stopped by SIG\w+ before serving \(([^)]+)\)", log)
    if found:
        return found.group(1)
    if "assigned partitions" in log:
        return "serving"
    if "stopping: draining" in log or "Signal received" in log or "stop requested by" in log:
        return "engine starting"
    return "interpreter or command start"


def stop_at(start: Callable[[], WorkerProcess], moment_s: float) -> tuple[int, float, str]:
    """Start a worker, SIGTERM it ``moment_s`` later; (exit code, seconds from the signal to the exit, step)."""
    worker = start()
    time.sleep(max(0.0, worker.started + moment_s - time.monotonic()))
    sent = time.monotonic()
    try:
        code = worker.terminate(timeout_s=EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"no exit {EXIT_BOUND_S:g} s after SIGTERM at {moment_s:.2f} s:\n{worker.log()[-4000:]}"
        ) from None
    took = time.monotonic() - sent
    log = worker.log()
    assert code == 0, f"exit {code} after SIGTERM at {moment_s:.2f} s of the start:\n{log[-4000:]}"
    assert "Traceback" not in log and "crash" not in log, f"SIGTERM at {moment_s:.2f} s:\n{log[-4000:]}"
    return code, took, where_stopped(log)


def start_duration(start: Callable[[], WorkerProcess]) -> float:
    """Seconds from the start of a worker to its first assignment on this machine, now (then stopped cleanly)."""
    worker = start()
    worker.wait_assigned(timeout_s=120)
    took = time.monotonic() - worker.started
    assert worker.terminate(timeout_s=EXIT_BOUND_S) == 0, worker.log()[-3000:]
    return took


def test_sigterm_at_random_moments_of_the_start_is_a_clean_exit_within_a_bound(
    engine: str,
    topics: Callable[..., Topics],
    worker_factory: Callable[..., WorkerProcess],
    cpu_burners: None,
) -> None:
    t = topics(4)
    rng = random.Random(f"stop-while-starting-{engine}")
    if LONG:
        window_s = max(SHORT_WINDOW_S, 1.2 * start_duration(lambda: worker_factory(t)))
        moments = log_spaced_moments(20, 0.05, window_s, rng)
    else:
        window_s = SHORT_WINDOW_S
        moments = log_spaced_moments(6, 0.05, window_s, rng)
    results = [(moment, *stop_at(lambda: worker_factory(t), moment)) for moment in moments]
    steps = Counter(step for *_, step in results)
    slowest = max(took for _, _, took, _ in results)
    print(
        f"{engine}: {len(results)} SIGTERMs over the first {window_s:.1f} s of the start under two CPU burners, all "
        f"exit 0; slowest exit {slowest:.1f} s after its signal; landed in {dict(steps)}"
    )
    for moment, _, took, step in results:
        print(f"  {moment:6.2f} s -> exit 0 after {took:4.1f} s ({step})")
