"""The Keras backend that renders: TensorFlow or JAX (``render.backend``).

Keras 3 reads its backend once, when it is first imported, from ``KERAS_BACKEND``.
:func:`choose` sets it before anything in atlas imports Keras, and refuses a backend atlas
does not render with, or one that differs from the Keras already loaded in this process.

The renderer itself (``ascent``, ``objectives``, ``maps``, ``cams``, ...) is written on
``keras.ops``; what ``keras.ops`` lacks comes from one small module per backend,
:data:`B` (``_backend_tensorflow`` or ``_backend_jax``): the gradient of an objective,
compilation, the Jacobian products Grad-CAM and the atlas labels need at an inner tensor,
the inverse real 2-D FFT, the per-image warp and device memory. Both modules have the same
functions (``tests/test_backends.py`` checks their names and their numbers).

This module imports no Keras; :mod:`atlas.render.engine` loads it (and TensorFlow only when
that is the backend) with the backend module.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from atlas.errors import ConfigError

BACKENDS = ("tensorflow", "jax")
SETTINGS = ("auto", *BACKENDS)


def requested(setting: str) -> str:
    """The backend a ``render.backend`` setting asks for: ``auto`` is ``KERAS_BACKEND``
    (Keras' own default, TensorFlow, where that is unset)."""
    if setting == "auto":
        return os.environ.get("KERAS_BACKEND", "").strip() or "tensorflow"
    return setting


def choose(setting: str) -> str:
    """Make ``setting``'s backend the one Keras loads with; return its name.

    Raises:
        ConfigError: a backend atlas does not render with (``KERAS_BACKEND=torch``), one
            whose library is not installed, or Keras already loaded with another one.
    """
    name = requested(setting)
    via = "KERAS_BACKEND" if setting == "auto" else "render.backend"
    if name not in BACKENDS:
        raise ConfigError(
            [
                (
                    via,
                    f"{name!r}: atlas renders with {' or '.join(BACKENDS)}; set render.backend "
                    "to one of them (or KERAS_BACKEND, with render.backend: auto)",
                )
            ]
        )
    loaded = _loaded_backend()
    if loaded is not None and loaded != name:
        raise ConfigError(
            [
                (
                    via,
                    f"asks for {name}, but Keras is already running on {loaded} in this "
                    "process; run atlas in a fresh process (Keras picks its backend once)",
                )
            ]
        )
    if importlib.util.find_spec(name) is None:
        package = "jax" if name == "jax" else "tensorflow"
        other = ", ".join(b for b in BACKENDS if b != name)
        raise ConfigError(
            [(via, f"{name} is not installed: pip install '{package}' (or choose {other})")]
        )
    os.environ["KERAS_BACKEND"] = name
    return name


def _loaded_backend() -> str | None:
    if "keras" not in sys.modules:
        return None
    keras = sys.modules["keras"]
    try:
        return keras.backend.backend()
    except AttributeError:  # keras half-imported (a circular import in progress)
        return None


def renderer(backend: str) -> str:
    """``"jax 0.10.2"``: the backend and its installed version, without importing it."""
    import importlib.metadata

    try:
        return f"{backend} {importlib.metadata.version(backend)}"
    except importlib.metadata.PackageNotFoundError:
        return backend
