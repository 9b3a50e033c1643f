"""Image parameterizations for regularized feature visualization, after Lucid's optvis.

Lucid (``lucid/optvis/param/spatial.py`` and ``color.py``) optimises a picture through two
changes of variables that make plain gradient ascent far better conditioned: a Fourier
spectrum scaled by 1/f (so every spatial frequency moves at about the same speed instead
of high frequencies winning) and a decorrelated colour space (so the optimiser does not
push the strongly correlated RGB channels apart into rainbow noise).

The frozen parameter values of both rendering methods and their presets live in
:mod:`atlas.config.methods` (no TensorFlow there: planning hashes them).

Each image of a batch is parameterized independently: the initial values come from the
image's own seed, so a unit renders the same picture alone or in a batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from atlas.render.engine import B, ops

log = logging.getLogger(__name__)

# Square root of the colour correlation of ImageNet pixels, from Lucid's param/color.py.
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
_MAX_NORM_SVD_SQRT = float(np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)))
_COLOR_MATRIX_T = (COLOR_CORRELATION_SVD_SQRT / _MAX_NORM_SVD_SQRT).T
# Lucid's initial standard deviation of the spectrum (or pixel) variables.
INIT_STD = 0.01


def rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """Frequency magnitude of each bin of a real 2-D FFT (``rfft2d``) of an image this size.

    Args:
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        float array of shape ``(height, width // 2 + 1)``.
    """
    freq_y = np.fft.fftfreq(height)[:, None]
    freq_x = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(freq_x * freq_x + freq_y * freq_y)


def spectrum_scale(height: int, width: int, decay_power: float = 1.0) -> np.ndarray:
    """The 1/f scaling of the spectrum variables, as in Lucid's ``fft_image``.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        decay_power: exponent of the 1/f law.

    Returns:
        float32 array of shape ``(height, width // 2 + 1)``.
    """
    freqs = rfft2d_freqs(height, width)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay_power
    return (scale * np.sqrt(height * width)).astype(np.float32)


def variable_shape(size: int, fft: bool) -> tuple[int, ...]:
    """Shape of one image's optimisation variable (without the batch axis).

    Args:
        size: side of the square picture in pixels.
        fft: whether the picture is parameterized by its Fourier spectrum.

    Returns:
        ``(2, 3, size, size // 2 + 1)`` (real and imaginary parts) for FFT, else
        ``(size, size, 3)``.
    """
    return (2, 3, size, size // 2 + 1) if fft else (size, size, 3)


def initial_variables(seeds: list[int], size: int, fft: bool) -> np.ndarray:
    """Random starting values, each image from its own seed.

    Args:
        seeds: one seed per image.
        size: side of the square picture in pixels.
        fft: whether the picture is parameterized by its Fourier spectrum.

    Returns:
        float32 array of shape ``(len(seeds),) + variable_shape(size, fft)``.
    """
    shape = variable_shape(size, fft)
    return np.stack(
        [np.random.default_rng(seed).normal(0.0, INIT_STD, shape) for seed in seeds]
    ).astype(np.float32)


# TensorFlow's CPU FFT runs each op on one thread, and the spectrum of a batch of 64
# pictures cost ~40 % of a lucid step; split into one op per core, the halves run side by
# side (inter-op threads): 39 ms instead of 91 ms of wall time per step on 2 cores
# (``B.in_parts``; JAX compiles the whole step into one XLA program: no split there).
FFT_PARTS = max(1, min(os.cpu_count() or 1, 8))
# The spectrum-to-pixels map (complex scaling, inverse FFT, transpose, colour matrix,
# sigmoid) is a dozen element-wise ops over the whole batch, each a pass over memory, and
# as many in its gradient: compiled by XLA into a few fused loops, forward and gradient of
# a batch of 64 pictures of 96 px took 15 ms of wall time and 23 ms of CPU instead of
# 32 ms and 60 ms on this 2-core machine (pixels equal within 3e-5 of 255). Only this
# part is compiled: XLA made the networks' depthwise convolutions ~12x slower here
# (TensorFlow; on JAX the whole step is one XLA program anyway).
JIT_PIXELS = True
_COMPILED: dict[tuple, Callable] = {}


def to_pixels(variables, size: int, fft: bool, decorrelate: bool):
    """Map optimisation variables to raw RGB pixels in [0, 255].

    Args:
        variables: ``(batch,) + variable_shape(size, fft)`` float32 tensor.
        size: side of the square picture in pixels.
        fft: whether ``variables`` is a Fourier spectrum.
        decorrelate: whether to map from the decorrelated colour space to RGB.

    Returns:
        float32 tensor ``(batch, size, size, 3)`` in [0, 255].
    """
    convert = _compiled(size, fft, decorrelate)
    if fft:  # pictures are independent: no picture changes
        return B.in_parts(convert, variables, FFT_PARTS)
    return convert(variables)


def _compiled(size: int, fft: bool, decorrelate: bool) -> Callable:
    """The pixel map for these settings: XLA-compiled for a spectrum (see JIT_PIXELS)."""
    if not (fft and JIT_PIXELS):
        return lambda variables: _to_pixels(variables, size, fft, decorrelate)
    key = (size, decorrelate)
    if key not in _COMPILED:
        _COMPILED[key] = B.compile(
            lambda variables: _to_pixels(variables, size, True, decorrelate), xla=True
        )
    return _COMPILED[key]


def _to_pixels(variables, size: int, fft: bool, decorrelate: bool):
    if fft:
        # a real scale of each bin: the real and imaginary parts scale alike
        scale = ops.convert_to_tensor(spectrum_scale(size, size), "float32")
        image = B.irfft2(variables[:, 0] * scale, variables[:, 1] * scale, size)
        # Lucid divides by 4 so that the sigmoid starts in its linear range.
        image = ops.transpose(image, (0, 2, 3, 1)) / 4.0
    else:
        image = variables
    if decorrelate:
        image = ops.tensordot(image, ops.convert_to_tensor(_COLOR_MATRIX_T), axes=[[3], [0]])
    return ops.sigmoid(image) * 255.0
