"""What every serving mode builds, built once: the worker (``app.py``), ``streamer serve`` (``serve.py``) and
``streamer batch`` (``cli/batch.py``) all go through this package, so that the three answer a row alike.

- ``models``: the model set (repository -> catalog -> scorer), the limits, the graphs' entity lookups, the
  batch scorer, the offline chunk scorer, and how a set is described and exported;
- ``serving_state``: the control channel (pins, canaries, shadows, rollbacks, a rollout's champion) applied to
  the model set, followed while a process runs or read once, and the model watcher with its callbacks;
- ``learning``: what a worker runs beside scoring (drift counts, quality monitor, events, and with Redis the
  prediction log, labels, online models, rollouts), as one typed value;
- ``signals``: SIGTERM and SIGINT, handled in one place.

Nothing here waits or moves data: it builds, starts and hands over.
"""
