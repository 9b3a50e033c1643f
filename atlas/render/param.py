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

import numpy as np

from atlas.render._tensorflow import tf

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
    """Frequency magnitude of each bin of ``tf.signal.rfft2d`` for an image of this size.

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
# side (inter-op threads): 39 ms instead of 91 ms of wall time per step on 2 cores.
FFT_PARTS = max(1, min(os.cpu_count() or 1, 8))
# The spectrum-to-pixels map (complex scaling, inverse FFT, transpose, colour matrix,
# sigmoid) is a dozen element-wise ops over the whole batch, each a pass over memory, and
# as many in its gradient: compiled by XLA into a few fused loops, forward and gradient of
# a batch of 64 pictures of 96 px took 15 ms of wall time and 23 ms of CPU instead of
# 32 ms and 60 ms on this 2-core machine (pixels equal within 3e-5 of 255). Only this
# part is compiled: XLA made the networks' depthwise convolutions ~12x slower here.
JIT_PIXELS = True
_COMPILED: dict[tuple, tf.types.experimental.GenericFunction] = {}


def to_pixels(variables: tf.Tensor, size: int, fft: bool, decorrelate: bool) -> tf.Tensor:
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
    small = variables.shape[0] is not None and variables.shape[0] < FFT_PARTS
    if fft and FFT_PARTS > 1 and not small:  # pictures are independent: no picture changes
        count = tf.shape(variables)[0]
        sizes = [count // FFT_PARTS] * (FFT_PARTS - 1)
        sizes.append(count - (count // FFT_PARTS) * (FFT_PARTS - 1))
        parts = tf.split(variables, tf.stack(sizes), num=FFT_PARTS)
        return tf.concat([convert(part) for part in parts], 0)
    return convert(variables)


def _compiled(size: int, fft: bool, decorrelate: bool):
    """The pixel map for these settings: XLA-compiled for a spectrum (see JIT_PIXELS)."""
    if not (fft and JIT_PIXELS):
        return lambda variables: _to_pixels(variables, size, fft, decorrelate)
    key = (size, decorrelate)
    if key not in _COMPILED:
        _COMPILED[key] = tf.function(
            lambda variables: _to_pixels(variables, size, True, decorrelate),
            jit_compile=True,
            reduce_retracing=True,
            autograph=False,
        )
    return _COMPILED[key]


def _to_pixels(variables: tf.Tensor, size: int, fft: bool, decorrelate: bool) -> tf.Tensor:
    if fft:
        spectrum = tf.complex(variables[:, 0], variables[:, 1]) * tf.cast(
            spectrum_scale(size, size), tf.complex64
        )
        image = tf.signal.irfft2d(spectrum, fft_length=[size, size])
        # Lucid divides by 4 so that the sigmoid starts in its linear range.
        image = tf.transpose(image, (0, 2, 3, 1)) / 4.0
    else:
        image = variables
    if decorrelate:
        image = tf.tensordot(image, tf.constant(_COLOR_MATRIX_T), axes=[[3], [0]])
    return tf.sigmoid(image) * 255.0
