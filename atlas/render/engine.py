"""Keras, loaded on the backend :func:`atlas.render.backend.choose` set, and that backend's
module :data:`B` (``_backend_tensorflow`` or ``_backend_jax``): what ``keras.ops`` lacks.

Every renderer module imports ``keras``, ``ops`` and ``B`` from here, never TensorFlow or
JAX directly, so the same code renders on either backend.
"""

from __future__ import annotations

import importlib
import sys

from atlas.errors import ConfigError
from atlas.render.backend import BACKENDS, requested


def _load():
    if requested("auto") == "tensorflow" and "keras" not in sys.modules:
        importlib.import_module("atlas.render._tensorflow")  # quiet TensorFlow start-up
    import keras

    module = f"atlas.render._backend_{keras.backend.backend()}"
    try:
        return keras, importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise ConfigError(
            [
                (
                    "KERAS_BACKEND",
                    f"Keras runs on {keras.backend.backend()!r}; atlas renders "
                    f"with {' or '.join(BACKENDS)}: set KERAS_BACKEND or render.backend",
                )
            ]
        ) from None


keras, B = _load()
ops = keras.ops
NAME: str = B.NAME

__all__ = ["B", "NAME", "keras", "ops"]
