"""TensorFlow (and Keras), imported without its C++ start-up lines on stderr.

TensorFlow's native code logs before ``TF_CPP_MIN_LOG_LEVEL`` is read ("All log messages
before absl::InitializeLog() ...", oneDNN and CUDA notices): noise in a CLI whose stderr
carries atlas's own progress and errors. File descriptor 2 points at /dev/null only while
TensorFlow loads and looks for devices; a Python exception is raised after it is back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    try:
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:  # no file descriptor 2 to redirect: nothing to silence
        yield
        return
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _native_stderr_silenced():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()  # the CUDA probe logs here, on first use

__all__ = ["keras", "tf"]
