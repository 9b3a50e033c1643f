"""The models a build has loaded: loaded only when something must be rendered."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from atlas.config.settings import ModelConfig
from atlas.plan import estimate
from atlas.plan.context import StageTimer

log = logging.getLogger(__name__)

MAX_LOADED = estimate.MODELS_KEPT_LOADED  # models kept loaded at once (see LoadedModels)


class LoadedModels:
    """Loads models only when something must be rendered, and keeps the
    :data:`MAX_LOADED` most recently used: a build of many models (a zoo of applications)
    would otherwise hold every model and its traced renderers to the end (12 GB for 20
    models). A released model is loaded again if a later task needs it; a task that is
    using it keeps its own reference meanwhile.

    A released model is destroyed only while no task runs (:meth:`in_use`): destroying a
    traced function removes it from TensorFlow's eager context, which crashes the process
    (SIGSEGV, tensorflow#59242) when another thread is running a function at that moment,
    as the unit pictures' thread does beside the other stages.
    """

    def __init__(self, timer: StageTimer, max_loaded: int = MAX_LOADED) -> None:
        self._loaded: dict[str, object] = {}  # least recently used first
        self._timer = timer
        self._max = max_loaded
        self._lock = threading.Lock()  # the unit pictures' thread loads models too
        self._quiet = threading.Condition(self._lock)  # signalled when a task ends
        self._running = 0  # tasks inside in_use()
        self._released: list[object] = []  # held until no task runs
        self.loads: list[tuple[str, float]] = []  # (model id, seconds) of each load

    def get(self, config: ModelConfig):
        with self._lock:
            loaded = self._loaded.pop(config.id, None)
            if loaded is None:
                loaded = self._load(config)
            self._loaded[config.id] = loaded
            while len(self._loaded) > self._max:
                oldest = next(iter(self._loaded))
                log.debug("releasing model %s", oldest)
                self._released.append(self._loaded.pop(oldest))
            if not self._running:
                self._destroy_released()
        return loaded

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Around a task that runs a model: released models are destroyed before it starts,
        once the tasks of other threads have ended (none starts meanwhile)."""
        with self._quiet:
            if self._released:
                self._quiet.wait_for(lambda: self._running == 0)
                self._destroy_released()
            self._running += 1
        try:
            yield
        finally:
            with self._quiet:
                self._running -= 1
                self._quiet.notify_all()

    def _destroy_released(self) -> None:
        """Called holding the lock, with no task running."""
        if self._released:
            self._released.clear()
            gc.collect()  # traced functions hold reference cycles

    def _load(self, config: ModelConfig):
        with self._timer.stage("load models"):
            from atlas.render.load import load_model

            log.info("loading model %s", config.id)
            start = time.perf_counter()
            loaded = load_model(config)
            self.loads.append((config.id, time.perf_counter() - start))
            return loaded
