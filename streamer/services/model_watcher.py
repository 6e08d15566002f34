"""Hot reload (contract section 6): the model repository is watched, and what changes in it is served.

A version directory is read only once it is complete and quiet: both ``card.toml`` and ``model.onnx`` present
and their size and modification time unchanged for ``settle_s`` (a directory renamed into place settles at
once; one copied file by file is not read half-copied). It is then loaded and validated exactly as at start
(card against graph, sha256, a warm-up that reads ``score`` and ``label`` as serving will) *beside* the serving
set, and published with it in one swap (``ServingModels.add``): batches in flight finish with the set they
started with.

- A version that fails is refused once per content (its files' size and mtime): ``on_refused`` logs one line,
  counts it and emits a ``model-refused`` event; the versions serving keep serving. Changing its files retries.
- A served version whose directory (or card, or model) disappears is removed: a bare model name falls back to
  the next highest version (or the pin), and the model's last version removed makes its requests
  ``unknown-model`` dead letters.
- A served version whose files change is reloaded like a new one (refused: the loaded one keeps serving).

Change detection: ``watchfiles`` (inotify) wakes the scan early; a scan runs at least every ``interval_s``
anyway, which is the polling fallback where inotify is unavailable (some container file systems, NFS).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamer.adapters import model_repository
from streamer.adapters.onnx_models import CARD_FILE, MODEL_FILE, LoadedModel
from streamer.core.errors import ModelError
from streamer.services.runner import Background, Service
from streamer.serving import ServingModels

log = logging.getLogger(__name__)

Fingerprint = tuple[int, int, int, int]  # card size, card mtime_ns, model size, model mtime_ns


def fingerprint(version_dir: Path) -> Fingerprint | None:
    """The content stamp of a version directory, or None while its card or model is missing."""
    try:
        card, model = (version_dir / CARD_FILE).stat(), (version_dir / MODEL_FILE).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return card.st_size, card.st_mtime_ns, model.st_size, model.st_mtime_ns


@dataclass(slots=True)
class _Seen:
    fingerprint: Fingerprint
    since: float


class ModelWatcher(Background):
    def __init__(
        self,
        models_dir: Path,
        serving: ServingModels,
        *,
        on_loaded: Callable[[LoadedModel], None],
        on_refused: Callable[[Path, ModelError], None],
        on_removed: Callable[[str], None],
        interval_s: float = 2.0,
        settle_s: float = 1.0,
        intra_op_num_threads: int = 1,
        use_inotify: bool = True,
    ) -> None:
        self._dir = models_dir
        self._serving = serving
        self._on_loaded, self._on_refused, self._on_removed = on_loaded, on_refused, on_removed
        self._interval_s, self._settle_s = interval_s, settle_s
        self._threads = intra_op_num_threads
        # What serves, by directory: the fingerprint it was loaded with.
        self._served: dict[Path, Fingerprint | None] = {
            m.path.parent: fingerprint(m.path.parent) for m in serving.current.scorer.models()
        }
        self._refused: dict[Path, Fingerprint | None] = {}
        self._pending: dict[Path, _Seen] = {}
        self._wake = threading.Event()
        self._inotify: threading.Thread | None = None
        self._inotify_stop = threading.Event()  # ends watchfiles' loop (checked every 50 ms)
        self._use_inotify = use_inotify
        self.service = Service("model-watcher", self._step, interval_s=0.0)

    def refused_at_start(self, refused: dict[Path, ModelError]) -> None:
        """Versions the start-up scan refused: refused once already, not again until they change."""
        for path in refused:
            self._refused[path] = fingerprint(path)

    def start(self) -> None:
        if self._use_inotify:
            self._inotify = threading.Thread(target=self._watch_inotify, name="streamer-model-inotify", daemon=True)
            self._inotify.start()
        super().start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.service.request_stop()  # first, so that the woken step sees it and scans no more
        self._inotify_stop.set()
        self._wake.set()
        self.service.stop(timeout_s)

    def _watch_inotify(self) -> None:
        try:
            import watchfiles
        except ImportError:
            log.info("watchfiles is not installed: polling %s every %.1f s", self._dir, self._interval_s)
            return
        try:
            for _ in watchfiles.watch(
                self._dir, stop_event=self._inotify_stop, debounce=100, step=50, raise_interrupt=False
            ):
                self._wake.set()
                if self.service.stopping:
                    return
        except Exception as exc:  # no inotify here (or the directory went away): the polling scan carries on
            log.info("cannot watch %s for changes (%s): polling every %.1f s", self._dir, exc, self._interval_s)

    def _step(self) -> bool:
        wait = self._settle_s / 2 if self._pending else self._interval_s
        self._wake.wait(wait)
        self._wake.clear()
        if not self.service.stopping:
            self.scan_once()
        return True

    def scan_once(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        present = {path: fingerprint(path) for path in model_repository.version_dirs(self._dir)}
        for path in [p for p in self._served if present.get(p) is None]:
            self._remove(path)
        for path, stamp in present.items():
            if stamp is None or self._served.get(path) == stamp or self._refused.get(path) == stamp:
                self._pending.pop(path, None)
                continue
            seen = self._pending.get(path)
            if seen is None or seen.fingerprint != stamp:
                self._pending[path] = _Seen(stamp, now)
                continue
            if now - seen.since < self._settle_s:
                continue
            del self._pending[path]
            self._load(path, stamp)
        for path in [p for p in self._pending if p not in present]:
            del self._pending[path]

    def _load(self, path: Path, stamp: Fingerprint) -> None:
        try:
            model = model_repository.load_version(path, self._threads)
        except ModelError as exc:
            self._refused[path] = stamp
            self._on_refused(path, exc)
            return
        self._refused.pop(path, None)
        self._serving.add(model)
        self._served[path] = stamp
        log.info("hot reload: serving %s from %s", model.card.ref, path)
        self._on_loaded(model)

    def _remove(self, path: Path) -> None:
        del self._served[path]
        ref = f"{path.parent.name}@{path.name}"
        models = self._serving.remove(ref)
        fallback = models.catalog.serving_version(path.parent.name)
        # an operator removed a version: routine while another serves the name, a warning when none is left
        # (its requests become unknown-model dead letters)
        log.log(
            logging.INFO if fallback else logging.WARNING,
            "hot reload: %s was removed from %s; %s",
            ref,
            self._dir,
            f"{path.parent.name} is now served by version {fallback}" if fallback else "no version of it is left",
        )
        self._on_removed(ref)
