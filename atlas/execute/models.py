"""The models a build has loaded: loaded only when something must be rendered."""

from __future__ import annotations

import gc
import logging
import threading

from atlas.config.settings import ModelConfig
from atlas.plan.context import StageTimer

log = logging.getLogger(__name__)

MAX_LOADED = 3  # models kept loaded at once (see LoadedModels)


class LoadedModels:
    """Loads models only when something must be rendered, and keeps the
    :data:`MAX_LOADED` most recently used: a build of many models (a zoo of applications)
    would otherwise hold every model and its traced renderers to the end (12 GB for 20
    models). A released model is loaded again if a later task needs it; a task that is
    using it keeps its own reference meanwhile."""

    def __init__(self, timer: StageTimer, max_loaded: int = MAX_LOADED) -> None:
        self._loaded: dict[str, object] = {}  # least recently used first
        self._timer = timer
        self._max = max_loaded
        self._lock = threading.Lock()  # the unit pictures' thread loads models too

    def get(self, config: ModelConfig):
        with self._lock:
            loaded = self._loaded.pop(config.id, None)
            if loaded is None:
                loaded = self._load(config)
            self._loaded[config.id] = loaded
            released = False
            while len(self._loaded) > self._max:
                oldest = next(iter(self._loaded))
                log.debug("releasing model %s", oldest)
                del self._loaded[oldest]
                released = True
        if released:
            gc.collect()  # traced functions hold reference cycles
        return loaded

    def _load(self, config: ModelConfig):
        with self._timer.stage("load models"):
            from atlas.render.load import load_model

            log.info("loading model %s", config.id)
            return load_model(config)
