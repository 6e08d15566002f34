"""Python's cyclic garbage collector, settled once a worker runs: what it started with is never scanned again.

By its first assignment a worker holds everything it keeps for its lifetime -- imported modules (Faust's
alone are tens of thousands of objects), the models, the metrics registry, the clients -- about 100k tracked
objects. Each full collection walks all of them, which took ~30 ms on the hot path's thread (measured in a
worker), a pause every request in flight waits out. ``settle`` collects once, then freezes what survives
(``gc.freeze``: moved to the permanent generation, which no collection scans), so a full collection later walks
only what the data path allocated since: a few thousand objects.

The young generation's threshold is raised from 700 to ``YOUNG_THRESHOLD``: the data path allocates a few
container objects per row and drops them within its batch, so most die before a collection at the larger
threshold, and the collector runs ~14x less often for about the same work per run (each young collection walks
at most that many objects: well under a millisecond). The older generations keep Python's ratios.

Both engines call ``settle`` from the shell, once, after the first assignment was read back (``Shell.assign``);
the batch CLI freezes before forking its workers for its own reason (``batch.offline``).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def settle() -> int:
    """Collect, freeze what is left and raise the young generation's threshold; returns the objects frozen.
    Idempotent in effect: a second call freezes what was allocated since (nothing is ever unfrozen)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()
